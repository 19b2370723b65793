"""The node image build never archives or deletes through a mount left inside its rootfs."""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LAB = ROOT / "scripts" / "lab"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")


def lab_shell(script: str, tmp_path: pathlib.Path) -> subprocess.CompletedProcess:
    """Run bash with scripts/lab sourced; `podman` is a stub that stores the archive it is fed."""
    prelude = f"""
set -euo pipefail
source {LAB}
podman() {{
  case "$1" in
    import) cat > {tmp_path}/imported.tar; echo imported >> {tmp_path}/podman.log ;;
    image) echo "image $*" >> {tmp_path}/podman.log ;;
  esac
}}
"""
    return subprocess.run(
        ["bash", "-c", prelude + script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


@pytest.fixture
def rootfs_with_bind_mount(tmp_path):
    """A fake rootfs with the host-side directory `outside` bind-mounted at rootfs/proc."""
    rootfs = tmp_path / "rootfs"
    (rootfs / "proc").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    (rootfs / "etc" / "hostname").write_text("node\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "host-secret").write_text("must never be archived or deleted\n")
    subprocess.run(["mount", "--bind", str(outside), str(rootfs / "proc")], check=True)
    yield rootfs, outside
    subprocess.run(["umount", "-l", str(rootfs / "proc")], capture_output=True)


def mounted_below(path: pathlib.Path) -> list[str]:
    targets = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True).stdout
    return [t for t in targets.splitlines() if t.startswith(str(path) + "/")]


def test_import_unmounts_first_and_archives_only_the_rootfs(rootfs_with_bind_mount, tmp_path):
    rootfs, outside = rootfs_with_bind_mount
    result = lab_shell(f"import_rootfs {rootfs} localhost/test:x abc", tmp_path)
    assert result.returncode == 0, result.stderr
    assert mounted_below(rootfs) == []
    listing = ["tar", "-tf", str(tmp_path / "imported.tar")]
    names = subprocess.run(listing, capture_output=True, text=True).stdout
    assert "./etc/hostname" in names.splitlines()
    assert "host-secret" not in names
    assert (outside / "host-secret").exists()


def test_a_mount_that_cannot_be_removed_stops_the_import(rootfs_with_bind_mount, tmp_path):
    rootfs, outside = rootfs_with_bind_mount
    # umount refusing (a busy mount on a host without lazy unmount) is simulated by a stub.
    result = lab_shell(f"umount() {{ return 1; }}\nimport_rootfs {rootfs} localhost/test:x abc", tmp_path)
    assert result.returncode != 0
    assert f"still mounted below {rootfs}" in result.stderr
    assert not (tmp_path / "imported.tar").exists()
    assert (outside / "host-secret").exists()


def test_cleanup_never_deletes_through_a_mount(rootfs_with_bind_mount, tmp_path):
    rootfs, outside = rootfs_with_bind_mount
    stuck = lab_shell(f"umount() {{ return 1; }}\nremove_build_dir {rootfs}", tmp_path)
    assert "left" in stuck.stderr and str(rootfs) in stuck.stderr
    assert (outside / "host-secret").exists()
    assert rootfs.exists()

    clean = lab_shell(f"remove_build_dir {rootfs}", tmp_path)
    assert clean.returncode == 0, clean.stderr
    assert not rootfs.exists()
    assert (outside / "host-secret").read_text() == "must never be archived or deleted\n"
