"""The scenarios' `on_host` marker (molecule/conftest.py): a test driven from one node runs against
that node only, is deselected (not skipped) for the others, and a name that is none of the run's
nodes stops the run instead of leaving the test out everywhere."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[2]

TESTS = textwrap.dedent(
    """
    import pytest

    @pytest.mark.on_host("node-1", reason="driven from the first node")
    def test_driven(host):
        pass

    def test_everywhere(host):
        pass
    """
)


def collect(tmp_path: pathlib.Path, tests: str, hosts: str) -> subprocess.CompletedProcess:
    shutil.copy(ROOT / "molecule" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_nodes.py").write_text(tests)
    isolated = ["-p", "no:cacheprovider", "-c", "/dev/null", "--rootdir", str(tmp_path)]
    return subprocess.run(
        [sys.executable, "-m", "pytest", *isolated, "--collect-only", "-q", "--hosts", hosts, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_test_on_one_node_runs_there_only_and_is_deselected_elsewhere(tmp_path):
    done = collect(tmp_path, TESTS, "podman://node-1,podman://node-2")
    assert done.returncode == 0, done.stdout + done.stderr
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    assert sorted(collected) == [
        "test_nodes.py::test_driven[podman://node-1]",
        "test_nodes.py::test_everywhere[podman://node-1]",
        "test_nodes.py::test_everywhere[podman://node-2]",
    ], done.stdout
    assert "3/4 tests collected (1 deselected)" in done.stdout, done.stdout


def test_a_node_that_is_not_in_the_run_stops_it(tmp_path):
    done = collect(
        tmp_path, TESTS.replace('"node-1", reason', '"node-9", reason'), "podman://node-1,podman://node-2"
    )
    assert done.returncode != 0
    assert "on_host names node-9, not one of (node-1, node-2)" in done.stdout + done.stderr


def test_the_marker_needs_a_reason(tmp_path):
    done = collect(tmp_path, TESTS.replace(', reason="driven from the first node"', ""), "podman://node-1")
    assert done.returncode != 0
    assert "on_host takes one node name and a reason" in done.stdout + done.stderr
