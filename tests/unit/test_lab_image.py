"""The node image build never archives or deletes through a mount left inside its rootfs."""

from __future__ import annotations

import os
import pathlib
import shutil
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


def copy_of_layer_inputs(tmp_path: pathlib.Path) -> pathlib.Path:
    """The files a layer's hash reads, in a root of their own that a test may edit."""
    root = tmp_path / "root"
    lab = ("node-image.recipe", "ssh-hostkeys.service", "node-layer.yml", "node-layer-engines.yml")
    for part in (f"lab/{name}" for name in lab):
        (root / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / part, root / part)
    for role in ("common", "dask", "airflow", "monitoring"):
        shutil.copytree(ROOT / "roles" / role, root / "roles" / role)
    return root


def layer_hash(root: pathlib.Path, tmp_path: pathlib.Path, layer: str = "common") -> str:
    result = lab_shell(f"CF_ROOT={root}\nlayer_hash debian13 {layer}", tmp_path)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_common_layer_is_rebuilt_when_its_role_or_playbook_changes_only(tmp_path):
    root = copy_of_layer_inputs(tmp_path)
    first = layer_hash(root, tmp_path)
    assert len(first) == 16 and first == layer_hash(root, tmp_path)

    (root / "roles" / "dask" / "defaults" / "main.yml").write_text("---\ndask_other: 1\n")
    assert layer_hash(root, tmp_path) == first, "another role's files are not part of the layer"

    defaults = root / "roles" / "common" / "defaults" / "main.yml"
    defaults.write_text(defaults.read_text() + "# a changed pin\n")
    second = layer_hash(root, tmp_path)
    assert second != first

    (root / "lab" / "node-layer.yml").write_text("---\n[]\n")
    assert layer_hash(root, tmp_path) not in (first, second)


def test_the_engines_layer_follows_the_pins_and_the_layer_below_not_the_tasks(tmp_path):
    root = copy_of_layer_inputs(tmp_path)
    first = layer_hash(root, tmp_path, "engines")
    assert len(first) == 16 and first != layer_hash(root, tmp_path, "common")

    tasks = root / "roles" / "dask" / "tasks" / "main.yml"
    tasks.write_text(tasks.read_text() + "# a changed task\n")
    (root / "roles" / "monitoring" / "defaults" / "main.yml").write_text("---\nmonitoring_other: 1\n")
    assert layer_hash(root, tmp_path, "engines") == first, "tasks and other roles are not part of it"

    closure = root / "roles" / "dask" / "files" / "closure-py3.13.txt"
    closure.write_text(closure.read_text() + "extra==1.0\n")
    second = layer_hash(root, tmp_path, "engines")
    assert second != first

    constraints = next((root / "roles" / "airflow" / "files").glob("constraints-*.txt"))
    constraints.write_text(constraints.read_text() + "extra==1.0\n")
    third = layer_hash(root, tmp_path, "engines")
    assert third not in (first, second)

    defaults = root / "roles" / "common" / "defaults" / "main.yml"
    defaults.write_text(defaults.read_text() + "# a changed pin below\n")
    assert layer_hash(root, tmp_path, "engines") not in (first, second, third), "the common layer is below it"


def test_an_unknown_layer_is_refused_before_anything_is_built(tmp_path):
    result = subprocess.run(
        [str(LAB), "image", "--layer", "spark"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode != 0
    assert "unknown layer 'spark' (layers: common engines)" in result.stderr
    assert "building" not in result.stdout + result.stderr


def test_a_rebuilt_image_replaces_the_one_it_superseded_and_nothing_else(tmp_path):
    """Only untagged images with the project's label and no container go; real podman, own label."""
    if shutil.which("podman") is None:
        pytest.skip("needs podman")
    label = f"io.clusterforge.test=prune{os.getpid()}"
    other_label = f"io.clusterforge.test-other=prune{os.getpid()}"
    env = dict(os.environ, CONTAINERS_CONF=str(ROOT / "lab" / "containers.conf"))
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()

    def podman(*args: str, stdin: bytes | None = None) -> str:
        done = subprocess.run(["podman", *args], input=stdin, capture_output=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode().strip()

    def build(tag: str, labels: tuple[str, ...], n: int) -> str:
        (rootfs / f"file{n}").write_text(f"{n}\n")
        archive = subprocess.run(
            ["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True
        ).stdout
        changes = [arg for one in labels for arg in ("--change", f"LABEL {one}")]
        return podman("import", "-q", *changes, "-", tag, stdin=archive)

    def exists(image: str) -> bool:
        return subprocess.run(["podman", "image", "exists", image], env=env).returncode == 0

    tag, other_tag = f"localhost/cf-prune-test-{os.getpid()}:x", f"localhost/cf-prune-other-{os.getpid()}:x"
    container = f"cf-prune-test-{os.getpid()}"
    try:
        superseded = build(tag, (label,), 1)
        in_use = build(tag, (label,), 2)
        podman("create", "--name", container, in_use, "true")
        current = build(tag, (label,), 3)
        not_ours = build(other_tag, (other_label,), 4)
        build(other_tag, (other_label,), 5)
        script = f"set -euo pipefail\nsource {LAB}\nLABEL_PROJECT={label}\nprune_superseded_images\n"
        result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "removed 1 superseded node image(s)" in result.stdout + result.stderr
        assert not exists(superseded)
        assert exists(in_use), "an image a container uses stays"
        assert exists(current) and exists(not_ours), "tagged images and other projects' images stay"
    finally:
        subprocess.run(["podman", "rm", "-f", container], capture_output=True, env=env)
        for image in (tag, other_tag):
            subprocess.run(["podman", "rmi", "-f", image], capture_output=True, env=env)
        for one in (label, other_label):
            subprocess.run(
                ["podman", "image", "prune", "-f", "--filter", f"label={one}"], capture_output=True, env=env
            )
