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
    where dataclasses and pickling look their module up.
    """
    path = Path(path)
    name = name or f"{path.parent.name}_{path.stem}_under_test"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.remove(folder)
    return module
