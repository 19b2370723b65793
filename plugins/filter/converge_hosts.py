# Copyright: clusterforge maintainers
# Apache-2.0
"""Host patterns of the fast re-converge (see playbooks/tier_state/check.yml)."""

from __future__ import annotations

from typing import Any


def clusterforge_converge_hosts(pattern: str, tier: str, groups: dict[str, Any]) -> str | list[str]:
    """PATTERN when the tier converges in this run (its hosts are in group cf_converge_TIER),
    else an empty pattern: the play then matches no host and costs nothing."""
    return pattern if f"cf_converge_{tier}" in groups else []


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"clusterforge_converge_hosts": clusterforge_converge_hosts}
