"""Import a file of the project that is no package's module (a plugin, a script, a role's module)
by its path, once: a second load of NAME returns the first."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: dataclasses and typing look their module up by name.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
