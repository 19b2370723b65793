"""The node settings of the services: JSON files their roles write, read with errors that say what to do.

Standard library only.
"""

from __future__ import annotations

import json
from typing import Any


class ConfigError(RuntimeError):
    """A settings file is missing, unreadable or incomplete."""


def load_json_settings(where: str, required: tuple[str, ...], tier: str, group: str) -> dict[str, Any]:
    """The settings in ``where``; ConfigError names the file and, for a missing or unreadable one,
    the group that may read it or the tier's playbook that writes it."""
    try:
        with open(where, encoding="utf-8") as handle:
            settings = json.load(handle)
    except PermissionError as exc:
        raise ConfigError(
            f"{where}: permission denied; run as the service account or a member of group {group}"
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"{where}: {exc.strerror or exc}; converge the {tier} tier (playbooks/{tier}.yml)"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: expected a JSON object")
    missing = [key for key in required if not settings.get(key)]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    return settings
