"""PWM's losses in your own TorchRL loop: collector, slice replay buffer, losses, optimisers.

    python docs/tutorials/own_loop.py                      # cartpole-swingup, 6000 env steps
    python docs/tutorials/own_loop.py --env-steps 1000 --small

No Trainer, no Hydra: the loop of ``examples/pwm/train.py`` written out, for users who have
their own training loop. The docs' tutorial page shows this file; the tests run it.
"""

from __future__ import annotations

import argparse

import torch
from tensordict.nn import TensorDictSequential
from torchrl.collectors import Collector
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_pwm.data import make_sequence_replay_buffer
from torchrl_pwm.envs import make_env
from torchrl_pwm.modules import TDMPC2WorldModel, ValueEnsemble, make_pwm_actor
from torchrl_pwm.objectives import PWMLoss

parser = argparse.ArgumentParser()
parser.add_argument("--env-steps", type=int, default=6000)
parser.add_argument("--small", action="store_true", help="tiny networks and horizon (tests)")
args = parser.parse_args()
torch.manual_seed(0)

# -- the environment: TorchRL's DMC env with PWM's transforms (action repeat 2) -------------
env = make_env("cartpole-swingup", seed=0)
obs_dim = env.observation_spec["observation"].shape[-1]
horizon = 4 if args.small else 16  # H: slice length for the world model, imagination length
num_slices = 16 if args.small else 256  # slices per batch
width = 32 if args.small else 256

# -- networks and the loss ------------------------------------------------------------------
world_model = TDMPC2WorldModel(obs_dim, env.action_spec.shape[-1], latent_dim=width // 2,
                               enc_dim=width, mlp_dim=width)  # fmt: skip
actor = make_pwm_actor(world_model.latent_dim, env.action_spec, hidden_sizes=(width, width))
critic = ValueEnsemble(world_model.latent_dim, hidden_sizes=(width, width))
loss = PWMLoss(world_model, actor, critic, imagination_horizon=horizon)
loss.make_value_estimator(gamma=0.99, lmbda=0.95)

# Three optimisers, as PWM: the losses touch disjoint parameters (the actor's gradient
# stops at the world model and critic), so one backward of their sum feeds all three.
optimizers = [
    torch.optim.Adam(world_model.parameters(), lr=3e-4),
    torch.optim.Adam(actor.parameters(), lr=5e-4, betas=(0.7, 0.95)),
    torch.optim.Adam(critic.parameters(), lr=5e-4, betas=(0.7, 0.95)),
]

# -- data: the collector acts with encoder -> actor; the buffer samples slices ---------------
policy = TensorDictSequential(world_model.encoder, actor, selected_out_keys=["action"])
total_frames = args.env_steps // env.action_repeat  # agent steps
seed_frames = min(1000, total_frames // 40 * 10)  # random actions first, whole batches
collector = Collector(env, policy, frames_per_batch=10, total_frames=total_frames,
                      init_random_frames=seed_frames)  # fmt: skip
replay_buffer = make_sequence_replay_buffer(total_frames, horizon=horizon, num_slices=num_slices)

# -- the loop -------------------------------------------------------------------------------
for i, batch in enumerate(collector):
    replay_buffer.extend(batch.reshape(-1))
    if len(replay_buffer) < seed_frames:
        continue
    # the buffer returns num_slices * (horizon + 1) steps, flat: make them [slices, time]
    slices = replay_buffer.sample().reshape(num_slices, -1)
    losses = loss(slices)
    total = sum(value for key, value in losses.items() if key.startswith("loss_"))
    for optimizer in optimizers:
        optimizer.zero_grad()
    total.backward()
    for module, clip in ((world_model, 20.0), (actor, 1.0), (critic, 100.0)):
        torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
    for optimizer in optimizers:
        optimizer.step()
    collector.update_policy_weights_()  # the collector acts with the new actor
    if i % 100 == 0:
        print(", ".join(f"{k} {v.item():.3f}" for k, v in losses.items() if k.startswith("loss_")))

# -- evaluation: the deterministic actor (tanh of the mean) in a fresh env ------------------
eval_env = make_env("cartpole-swingup", seed=10_000)
with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
    episode = eval_env.rollout(500, policy)
print(f"evaluation return after {args.env_steps} env steps: {episode['next', 'reward'].sum():.1f}")
collector.shutdown()
