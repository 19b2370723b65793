# Copyright: clusterforge maintainers
# Apache-2.0
"""Host patterns of the fast re-converge (see playbooks/tier_state/check.yml)."""

from __future__ import annotations

from typing import Any


def clusterforge_converge_hosts(pattern: str, tier: str, groups: dict[str, Any]) -> str | list[str]:
    """PATTERN when the tier converges in this run (its hosts are in group cf_converge_TIER),
    else an empty pattern: the play then matches no host and costs nothing."""
    return pattern if f"cf_converge_{tier}" in groups else []


def _resolve(pattern: str, groups: dict[str, Any]) -> set[str] | None:
    """The hosts of a plain inventory pattern (groups or hosts joined by ``:`` or ``,``, with ``!``
    and ``&``); None for anything else (wildcards, ranges, regular expressions): not resolved here."""
    every = set(groups.get("all") or [])
    chosen: set[str] = set()
    for term in (t for t in pattern.replace(",", ":").split(":") if t):
        operator, name = (term[0], term[1:]) if term[0] in "!&" else ("", term)
        if not name or any(c in name for c in "*?[]~"):
            return None
        # A name that is neither a group nor a host matches nothing, as in Ansible (an optional group).
        members = set(groups[name]) if name in groups else ({name} if name in every else set())
        if operator == "!":
            chosen -= members
        elif operator == "&":
            chosen &= members
        else:
            chosen |= members
    return chosen


def clusterforge_compare_hosts(
    pattern: str, tier: str, groups: dict[str, Any], hostvars: Any
) -> str | list[str]:
    """PATTERN, unless this run's snapshot (playbooks/tier_state/snapshot.yml) already found the
    tier fresh on every one of its hosts and no tier has converged since: the comparison would then
    find the same (the secrets it compares are still the snapshot's), and its play matches no host."""
    if any(name.startswith("cf_converge_") and members for name, members in groups.items()):
        return pattern  # a tier converged in this run: it may have changed a secret this one read
    hosts = _resolve(pattern, groups) if isinstance(pattern, str) else None
    if not hosts:
        return pattern
    for host in hosts:
        try:
            snapshot = hostvars[host].get("__cf_tier_snapshot")
        except (KeyError, AttributeError, TypeError):
            return pattern
        if not isinstance(snapshot, dict) or tier not in (snapshot.get("fresh_tiers") or []):
            return pattern
    return []


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "clusterforge_converge_hosts": clusterforge_converge_hosts,
            "clusterforge_compare_hosts": clusterforge_compare_hosts,
        }
