"""Sphinx configuration for torchrl_pwm.

Build (from the repository root)::

    .venv/bin/python -m sphinx -b html docs docs/_build/html

The build works offline: intersphinx inventories that cannot be fetched only produce a warning
(``PWM_DOCS_OFFLINE=1`` skips them). The Results page renders ``docs/results/*.md`` with the
``markdown`` package (the ``docs`` extra), or shows their source without it.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

DOCS_DIR = Path(__file__).resolve().parent
REPO_ROOT = DOCS_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

# -- Project -------------------------------------------------------------------------------------
project = "torchrl_pwm"
author = "torchrl_pwm developers"
copyright = "torchrl_pwm developers"

try:
    from importlib.metadata import version as _version

    release = _version("torchrl_pwm")
except Exception:  # not installed: build from the source tree anyway
    release = "0.1.0.dev0"
version = ".".join(release.split(".")[:2])

# -- General -------------------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
]

source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "results/*.md"]
templates_path: list[str] = []

# -- autodoc / autosummary / napoleon --------------------------------------------------------------
# Summary tables only: api.rst documents every object itself, so no stub pages are generated.
autosummary_generate = False
autodoc_member_order = "bysource"
# Show only our own docstrings: members without one (e.g. forward) would otherwise inherit
# torch's or torchrl's text.
autodoc_inherit_docstrings = False
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_default_options = {"show-inheritance": True}

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
napoleon_attr_annotations = False  # the _AcceptedKeys fields are all NestedKey: omit the type

# -- intersphinx ---------------------------------------------------------------------------------
# Without network the inventories are not reachable: Sphinx then warns once per inventory and the
# cross-references stay plain text. Set PWM_DOCS_OFFLINE=1 to skip the look-ups (and warnings).
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "torch": ("https://pytorch.org/docs/stable", None),
    "tensordict": ("https://pytorch.org/tensordict/stable", None),
    "torchrl": ("https://pytorch.org/rl/stable", None),
}
if os.environ.get("PWM_DOCS_OFFLINE"):
    intersphinx_mapping = {}
intersphinx_timeout = 3
intersphinx_disabled_reftypes = ["std:doc"]

# -- HTML ----------------------------------------------------------------------------------------
try:
    import sphinx_rtd_theme  # noqa: F401

    html_theme = "sphinx_rtd_theme"
except ImportError:
    html_theme = "alabaster"
html_title = f"torchrl_pwm {release}"
html_static_path: list[str] = []


# -- Re-exported data ----------------------------------------------------------------------------
def _reexported_data_doc(app, what, name, obj, options, lines) -> None:
    """Give re-exported module constants (``#:`` comments) their own docs, not their type's.

    ``torchrl_pwm.modules.WORLD_MODEL_PRESETS`` is documented by a ``#:`` comment in
    ``torchrl_pwm.modules.world_model``; autodoc only reads such comments in the module named in
    the directive and otherwise falls back to ``dict.__doc__``.
    """
    if what != "data" or not name.startswith("torchrl_pwm."):
        return
    pkg, _, attr = name.rpartition(".")
    from sphinx.pycode import ModuleAnalyzer

    for modname, module in sorted(sys.modules.items()):
        if not modname.startswith(pkg + ".") or getattr(module, attr, None) is not obj:
            continue
        try:
            doc = ModuleAnalyzer.for_module(modname).find_attr_docs().get(("", attr))
        except Exception:
            continue
        if doc:
            lines[:] = list(doc)
            return


# -- Class signatures ----------------------------------------------------------------------------
def _init_signature(app, what, name, obj, options, signature, return_annotation):
    """Show ``__init__``'s signature for our classes.

    torchrl's and tensordict's metaclasses define ``__call__(*args, **kwargs)``, which autodoc
    would otherwise report as the signature of every ``LossModule``, ``EnvBase`` and
    ``TensorDictModule`` subclass.
    """
    if what != "class" or not name.startswith("torchrl_pwm.") or signature != "(*args, **kwargs)":
        return None
    import inspect

    from sphinx.util.inspect import stringify_signature

    try:
        sig = inspect.signature(obj.__init__)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())[1:]  # drop self
    sig = sig.replace(parameters=params, return_annotation=inspect.Signature.empty)
    return stringify_signature(sig, show_annotation=False), return_annotation


# -- Results page --------------------------------------------------------------------------------
RESULTS_DIR = DOCS_DIR / "results"


_IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<path>[^)\s]+)\)\s*$")


def _markdown_as_rst(path: Path) -> list[str]:
    """A markdown result file as RST: its text rendered to HTML (tables included), its images
    (``![alt](relative.png)`` lines) as ``image`` directives so that Sphinx copies them."""
    try:
        import markdown
    except ImportError:  # without the renderer, show the source
        return [f".. literalinclude:: results/{path.name}", "   :language: markdown", ""]
    lines, chunk = [], []

    def flush() -> None:
        if "".join(chunk).strip():
            html = markdown.markdown("\n".join(chunk), extensions=["tables", "fenced_code"])
            lines.extend([".. raw:: html", ""] + [f"   {ln}" for ln in html.splitlines()] + [""])
        chunk.clear()

    for line in path.read_text().splitlines():
        match = _IMAGE.match(line.strip())
        if match:
            flush()
            image = (path.parent / match["path"]).resolve().relative_to(DOCS_DIR)
            lines += [f".. image:: {image.as_posix()}", f"   :alt: {match['alt']}", ""]
        else:
            chunk.append(line)
    flush()
    return lines


def _results_section() -> str:
    """RST showing every markdown file under docs/results/ rendered (tables and plots), with a
    download link to its source, and listing the other result files."""
    files = sorted(p for p in RESULTS_DIR.glob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        return "\n*No benchmark results have been recorded yet.*\n"
    lines = []
    for path in files:
        rel = f"results/{path.name}"
        if path.suffix == ".md":
            lines += [
                "",
                path.stem,
                "-" * max(len(path.stem), 4),
                "",
                f"Source: :download:`{rel} <{rel}>`",
                "",
                *_markdown_as_rst(path),
            ]
    others = [p for p in files if p.suffix != ".md"]
    if others:
        lines += ["", "Other result files", "------------------", ""]
        lines += [f"- :download:`results/{p.name} <results/{p.name}>`" for p in others]
        lines.append("")
    return "\n".join(lines)


def _on_source_read(app, docname: str, source: list[str]) -> None:
    if docname == "results":
        source[0] = source[0].replace(".. pwm-results-list::", _results_section())


def _always_reread_results(app, env, added, changed, removed) -> list[str]:
    # The results page is assembled from docs/results/* at read time: re-read it on every build.
    return ["results"] if "results" in env.found_docs else []


def setup(app):
    app.connect("source-read", _on_source_read)
    app.connect("autodoc-process-docstring", _reexported_data_doc)
    app.connect("autodoc-process-signature", _init_signature)
    app.connect("env-get-outdated", _always_reread_results)
    return {"parallel_read_safe": True}
