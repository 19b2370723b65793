"""The plugins' own documentation: ansible-doc and ansible-lint read DOCUMENTATION, EXAMPLES and
RETURN as YAML, and a string that is not YAML leaves a plugin without documentation."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = sorted(p for p in (ROOT / "plugins").glob("*/*.py") if p.name != "__init__.py")
DOC_NAMES = ("DOCUMENTATION", "EXAMPLES", "RETURN")


def doc_strings(path: Path) -> dict[str, str]:
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in DOC_NAMES:
                    found[target.id] = node.value.value
    return found


def test_the_plugins_are_found():
    assert len(PLUGINS) > 8
    assert sum("DOCUMENTATION" in doc_strings(p) for p in PLUGINS) >= 5


@pytest.mark.parametrize("path", PLUGINS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_documentation_string_is_yaml(path):
    for name, text in doc_strings(path).items():
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            pytest.fail(f"{path.relative_to(ROOT)} {name} is not YAML: {exc}")
        if name == "DOCUMENTATION":
            assert isinstance(loaded, dict) and loaded.get("short_description"), name
