"""Test package; :func:`load_module` loads the example and benchmark scripts, which are not
importable packages."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_module(path: Path, name: str | None = None) -> ModuleType:
    """Execute the file at ``path`` as a fresh module and return it.

    Its folder is on ``sys.path`` while it executes, so a script's imports of its sibling files
    (``examples/pwm/train.py`` importing ``utils``) resolve as they do when it is run, and the
    module is registered in ``sys.modules`` under ``name`` (default: the folder and file stem),
    where dataclasses and pickling look their module up. ``sys.path`` is restored afterwards
    (also the entries the script added itself), and so is ``sys.modules`` if it fails.
    """
    path = Path(path)
    name = name or f"{path.parent.name}_{path.stem}_under_test"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    saved_path, previous = sys.path[:], sys.modules.get(name)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
        raise
    finally:
        sys.path[:] = saved_path
    return module
