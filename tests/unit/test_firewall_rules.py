"""The firewall's rules for the metrics exporters' ports, as the role renders them for each host: only
the Prometheus host and the head node may open them, before the rule that lets every member reach
every other port; without those groups the ports are like any other."""

from __future__ import annotations

from pathlib import Path

from localplay import ROOT, render_on_hosts

ROLE = ROOT / "roles/firewall"
ADDRESSES = {"h1": "10.0.0.1", "h2": "10.0.0.2", "h3": "10.0.0.3"}


def render(tmp_path: Path, groups: dict[str, list[str]], **values: object) -> dict[str, str]:
    """The rules file of every host of an inventory of h1, h2 and h3 with GROUPS."""
    hosts = {name: {"cluster_address": address} for name, address in ADDRESSES.items()}
    return render_on_hosts(tmp_path, ROLE, "firewall.nft.j2", hosts, groups, values=dict(values))


def rule_lines(rules: str) -> list[str]:
    return [line.strip() for line in rules.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_only_the_prometheus_host_and_the_head_open_the_exporters_ports(tmp_path: Path):
    rules = render(tmp_path, {"head": ["h1"], "monitoring": ["h3"], "workers": ["h2", "h3"]})
    for name in ADDRESSES:
        lines = rule_lines(rules[name])
        accept = "tcp dport { 9100, 9121, 9187 } ip saddr { 10.0.0.3, 10.0.0.1 } accept"
        drop = (
            'tcp dport { 9100, 9121, 9187 } counter drop comment "dropped: an exporter, not from its clients"'
        )
        assert accept in lines and drop in lines, (name, lines)
        # Before the members' rule, which would let the other members in.
        assert lines.index(accept) < lines.index(drop) < lines.index("ip saddr @cluster_v4 accept"), lines


def test_the_inventory_s_exporter_ports_and_one_host_in_both_groups(tmp_path: Path):
    rules = render(tmp_path, {"head": ["h1"], "monitoring": ["h1"]}, monitoring_node_exporter_port=9200)
    lines = rule_lines(rules["h2"])
    assert "tcp dport { 9121, 9187, 9200 } ip saddr { 10.0.0.1 } accept" in lines, lines


def test_without_a_prometheus_host_or_head_the_exporter_ports_are_like_any_other(tmp_path: Path):
    rules = render(tmp_path, {"workers": ["h2", "h3"]})
    for name in ADDRESSES:
        assert "9100" not in rules[name] and "exporter" not in rules[name], rules[name]
        assert "ip saddr @cluster_v4 accept" in rule_lines(rules[name])
