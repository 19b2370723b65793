"""The nodes' side of the Python package cache (roles/package_cache/tasks/pip_client.yml), run by
Ansible on localhost: the password goes into a netrc block of its own (web_gateway credentials.yml,
format netrc), the index URL into pip's global configuration (0600), and pip with that configuration
and that netrc installs from a password-protected index on loopback (and is refused without the
netrc); turning the cache off removes both and keeps what else the files hold."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from localplay import ROOT, role_play, run_local_playbook
from loopback_http import basic_auth_server

ROLE = ROOT / "roles" / "package_cache"
PLAY = role_play(
    ROLE,
    f"""  tasks:
    - ansible.builtin.import_tasks: {ROLE}/tasks/pip_client.yml
""",
)
USER = "clusterforge"


def converge(tmp_path: Path, url: str = "https://cache:3143/simple/", on: bool = True) -> tuple[int, str]:
    (tmp_path / "play.yml").write_text(PLAY)
    (tmp_path / "home").mkdir(exist_ok=True)
    values = {
        "cluster_secrets_dir": str(tmp_path / "secrets"),
        "cluster_service_user": USER,
        "package_cache_enabled": on,
        "__package_cache_pip_netloc": "127.0.0.1",
        "__package_cache_pip_url": url,
        "__package_cache_netrc": str(tmp_path / "home" / ".netrc"),
        "__package_cache_pip_conf": str(tmp_path / "pip.conf"),
        "ansible_python_interpreter": sys.executable,
    }
    return run_local_playbook(tmp_path / "play.yml", values)


def password(tmp_path: Path) -> str:
    return (tmp_path / "secrets" / "web" / "package-cache-pip.password").read_text().strip()


def index_line(tmp_path: Path) -> str:
    lines = (tmp_path / "pip.conf").read_text().splitlines()
    return next((line for line in lines if line.startswith("index-url")), "")


def test_root_gets_the_password_in_netrc_and_the_index_in_pip_conf_both_root_only(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text("machine example.org login me password mine\n")
    (tmp_path / "pip.conf").write_text("[global]\ntimeout = 60\n")
    rc, log = converge(tmp_path)
    assert rc == 0, log
    netrc = (home / ".netrc").read_text()
    assert f"machine 127.0.0.1 login {USER} password {password(tmp_path)}\n" in netrc
    assert "machine example.org login me password mine" in netrc  # the operator's own line stays
    assert index_line(tmp_path) == "index-url = https://cache:3143/simple/"
    assert "timeout = 60" in (tmp_path / "pip.conf").read_text()
    for path in (home / ".netrc", tmp_path / "pip.conf"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert password(tmp_path) not in log  # no_log
    rc, log = converge(tmp_path)
    assert rc == 0 and "changed=0" in log, log
    rc, log = converge(tmp_path, on=False)
    assert rc == 0, log
    assert (home / ".netrc").read_text() == "machine example.org login me password mine\n"
    assert index_line(tmp_path) == ""
    assert "timeout = 60" in (tmp_path / "pip.conf").read_text()


def test_a_node_without_the_cache_gets_no_files(tmp_path):
    rc, log = converge(tmp_path, on=False)
    assert rc == 0, log
    assert not (tmp_path / "home" / ".netrc").exists()
    assert not (tmp_path / "pip.conf").exists()


def tiny_wheel(directory: Path) -> Path:
    wheel = directory / "cftiny-1.0-py3-none-any.whl"
    files = {
        "cftiny/__init__.py": "ANSWER = 42\n",
        "cftiny-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: cftiny\nVersion: 1.0\n",
        "cftiny-1.0.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = [f"{name},sha256=,{len(text)}" for name, text in files.items()]
    files["cftiny-1.0.dist-info/RECORD"] = "\n".join([*record, "cftiny-1.0.dist-info/RECORD,,"]) + "\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


@pytest.fixture
def index(tmp_path: Path) -> Iterator[tuple[str, list[str | None]]]:
    """A PEP 503 index on loopback that answers only the password converge() generated."""
    wheel = tiny_wheel(tmp_path)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    page = f'<a href="/files/{wheel.name}#sha256={digest}">{wheel.name}</a>'
    routes = {
        "/simple/cftiny/": ("text/html", page.encode()),
        f"/files/{wheel.name}": ("application/octet-stream", wheel.read_bytes()),
    }
    with basic_auth_server(USER, lambda: password(tmp_path), routes, realm="cache") as (base, seen):
        yield f"{base}/simple/", seen


def pip_download(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """pip as root's pip on a node runs it: the configuration the role wrote, HOME's netrc."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(HOME=str(tmp_path / "home"), PIP_CONFIG_FILE=str(tmp_path / "pip.conf"))
    argv = [sys.executable, "-m", "pip", "download", "--no-input", "--no-deps"]
    argv += ["-d", str(tmp_path / "dl"), "cftiny==1.0"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_pip_installs_through_the_password_protected_cache_with_the_netrc_alone(tmp_path, index):
    url, seen = index
    rc, log = converge(tmp_path, url=url)
    assert rc == 0, log
    done = pip_download(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "dl" / "cftiny-1.0-py3-none-any.whl").exists()
    assert seen and None not in seen  # every request carried the password, none was refused first
    # Without the password pip is refused (the index URL kept by hand, the netrc block gone).
    (tmp_path / "home" / ".netrc").write_text("")
    (tmp_path / "dl" / "cftiny-1.0-py3-none-any.whl").unlink()
    seen.clear()
    done = pip_download(tmp_path)
    assert done.returncode != 0
    assert seen and seen[0] is None
