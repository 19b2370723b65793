"""The jupyter tier as a participant meets it: HTTPS from the cluster CA, refusals, login, a server
under its limits, and the clusterforge kernel reaching Dask as the user (PySpark and Celery from the
kernel: the notebooks checks of the lab step, where every tier runs)."""

from __future__ import annotations

import json
import os
import pathlib
import stat
import subprocess

import pytest
import testinfra
import yaml

SCENARIO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((SCENARIO / "molecule.yml").read_text())
HEAD = CONFIG["platforms"][0]["name"]
WORKER = CONFIG["platforms"][1]["name"]
HUB_PY = "/opt/clusterforge/jupyter-venv/bin/python"
PROBE = "/root/hub_probe.py"
CA = "/etc/clusterforge/jupyter/ca.crt"
USER, PASSWORD = "bob", "molecule-bob-password"
LIMITS = {"MemoryMax": str(1536 * 1024**2), "CPUQuotaPerSecUSec": "1s"}


@pytest.fixture(scope="module")
def head():
    host = testinfra.get_host(f"podman://{HEAD}")
    copied = host.run("printf '%%s' %s > %s", (SCENARIO / "tests" / "hub_probe.py").read_text(), PROBE)
    assert copied.rc == 0, copied.stderr
    return host


@pytest.fixture(scope="module")
def url(head):
    address = head.run("getent ahostsv4 %s", HEAD).stdout.split()[0]
    return f"https://{address}:8000"


def probe(head, url, action, user=USER, password=PASSWORD, code=None, timeout=400):
    args = [url, CA, user, password, action] + ([code] if code else [])
    done = head.run("timeout %s %s %s " + " ".join(["%s"] * len(args)), str(timeout), HUB_PY, PROBE, *args)
    assert done.rc == 0, done.stderr or done.stdout
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_hub_runs_and_listens_on_the_cluster_address_only(head, url):
    assert head.service("jupyterhub").is_running
    assert head.service("jupyterhub").is_enabled
    address = url.split("//")[1].split(":")[0]
    assert head.socket(f"tcp://{address}:8000").is_listening
    assert not head.socket("tcp://0.0.0.0:8000").is_listening
    for port in (8091, 8001):
        assert head.socket(f"tcp://127.0.0.1:{port}").is_listening
        assert not head.socket(f"tcp://{address}:{port}").is_listening


def test_the_certificate_comes_from_the_cluster_ca(head, url):
    done = head.run("curl -sS -o /dev/null -w '%%{http_code}' --cacert %s %s/hub/login", CA, url)
    assert done.rc == 0 and done.stdout == "200", done.stderr
    # The system trust store does not know the cluster CA: the same request without it fails.
    assert head.run("curl -sS -o /dev/null %s/hub/login", url).rc != 0
    issuer = head.run("openssl x509 -noout -issuer -in /etc/clusterforge/jupyter/tls/hub.crt").stdout
    assert "molecule-jupyter Dask CA" in issuer


def test_anonymous_and_wrong_password_requests_are_refused(head, url):
    assert probe(head, url, "anonymous") == {"status": 403}
    assert probe(head, url, "token", password="wrong") == {"status": 403, "token": False}
    assert probe(head, url, "form", password="wrong")["status"] == 403
    assert probe(head, url, "token", user="nobody", password="x")["status"] == 403
    # A local account that is not a hub user does not get in with its own password either.
    assert probe(head, url, "token", user="clusterforge", password="")["status"] == 403


def test_a_user_logs_in_through_the_form_and_the_api(head, url):
    form = probe(head, url, "form")
    assert form["status"] == 302 and any(
        c.startswith("jupyterhub-session-id") or c == "jupyterhub-hub-login" for c in form["cookies"]
    ), form
    assert probe(head, url, "token") == {"status": 201, "token": True}


def test_generated_passwords_are_private_on_the_controller():
    secrets = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "secrets" / "jupyter" / "users"
    alice = secrets / "alice"
    assert len(alice.read_text().strip()) == 20
    assert stat.S_IMODE(alice.stat().st_mode) == 0o600
    assert not (secrets / "bob").exists()  # bob's password is given in the inventory


def test_the_check_account_credentials_are_the_verification_accounts_alone(head):
    f = head.file("/etc/clusterforge/jupyter/check.json")
    assert f.user == "clusterforge-verify" and f.mode == 0o600
    assert head.file("/etc/clusterforge/jupyter/tls/hub.key").mode == 0o600


def test_the_kernel_reaches_dask_over_tls_as_the_user(head, url):
    code = (
        "import getpass, json\n"
        "from distributed import Client\n"
        "with Client(timeout=30) as c:\n"
        "    c.wait_for_workers(1, timeout=60)\n"
        "    print(json.dumps({'me': getpass.getuser(), 'scheduler': c.scheduler.address,\n"
        "        'total': c.submit(sum, range(1001)).result(),\n"
        "        'hosts': sorted(set(c.run(__import__('socket').gethostname).values()))}))\n"
    )
    out = probe(head, url, "kernel", code=code)
    assert out["error"] is None, out
    result = json.loads(out["stdout"].strip().splitlines()[-1])
    assert result["me"] == USER and result["total"] == 500500
    assert result["scheduler"].startswith("tls://") and result["hosts"] == [WORKER]
    print("time to first kernel:", out)


def test_the_users_server_runs_under_its_limits_as_the_user(head):
    unit = f"jupyter-{USER}-singleuser"
    shown = head.run(
        "systemctl show %s -p ActiveState -p MemoryMax -p CPUQuotaPerSecUSec -p User", unit
    ).stdout
    props = dict(line.split("=", 1) for line in shown.splitlines())
    assert props["ActiveState"] == "active"
    assert {k: props[k] for k in LIMITS} == LIMITS
    assert props["User"] in (USER, head.user(USER).uid and str(head.user(USER).uid))
    assert head.file(f"/home/{USER}/notebooks/01-dask-array-dataframe.ipynb").user == USER


def test_stopping_the_server_removes_its_unit(head, url):
    assert probe(head, url, "stop")["status"] in (202, 204)
    assert head.run("systemctl is-active jupyter-%s-singleuser", USER).stdout.strip() != "active"


def engine_facts(host) -> dict:
    """This node's published engine parts (the verification tier merges them into cluster.json)."""
    found = host.run(
        "cat /etc/ansible/facts.d/clusterforge_engine_*.fact 2>/dev/null; ls /etc/ansible/facts.d"
    )
    names = [n for n in found.stdout.split() if n.startswith("clusterforge_engine_")]
    return {
        n.removeprefix("clusterforge_engine_").removesuffix(".fact"): json.loads(
            host.file(f"/etc/ansible/facts.d/{n}").content_string
        )
        for n in names
    }


def merged_engines() -> dict:
    engines: dict = {}
    for name in (HEAD, WORKER):
        for engine, part in engine_facts(testinfra.get_host(f"podman://{name}")).items():
            section = engines.setdefault(engine, {})
            for key, value in part.items():
                if isinstance(value, dict) and isinstance(section.get(key), dict):
                    section[key].update(value)
                else:
                    section[key] = value
    return engines


def run_suite(head, address: str, only: str, inject: str | None = None) -> list[dict]:
    """The notebooks checks of compute_jobs, as the verification tier runs them: the service account."""
    env = dict(os.environ, CONTAINERS_CONF=str(SCENARIO.parents[1] / "lab" / "containers.conf"))
    head.run("rm -rf /tmp/cj && mkdir -p /tmp/cj")
    copied = subprocess.run(
        ["podman", "cp", str(SCENARIO.parents[1] / "compute_jobs"), f"{HEAD}:/tmp/cj/compute_jobs"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert copied.returncode == 0, copied.stderr
    cluster = {
        "schema_version": 1,
        "cluster_name": "molecule-jupyter",
        "inventory_hash": "sha256:" + "0" * 64,
        "run_id": "molecule-jupyter",
        "hosts": [
            {"name": HEAD, "address": address, "groups": ["head", "jupyter"], "cores": 1, "memory_mb": 16}
        ],
        "engines": merged_engines(),
    }
    head.run(
        "printf '%%s' %s > /tmp/cj/cluster.json && chown -R clusterforge-verify /tmp/cj", json.dumps(cluster)
    )
    done = head.run(
        "cd /tmp/cj && timeout 1500 runuser -u clusterforge-verify -- env PYTHONPATH=/tmp/cj "
        "/opt/clusterforge/venv/bin/python -m compute_jobs run --cluster /tmp/cj/cluster.json --only %s "
        "--scope cluster --target %s --quiet --json /tmp/cj/out.jsonl"
        + (f" --inject {inject}" if inject else ""),
        only,
        HEAD,
    )
    lines = [json.loads(line) for line in head.file("/tmp/cj/out.jsonl").content_string.splitlines() if line]
    results = [r for r in lines if r.get("status") and r.get("check", "").startswith("notebooks.")]
    assert results, done.stdout + done.stderr
    return results


def test_the_notebooks_checks_pass_through_the_hub_and_their_negative_control_fails(head, url):
    address = url.split("//")[1].split(":")[0]
    results = run_suite(head, address, "notebooks")
    statuses = {r["name"]: r["status"] for r in results}
    figures = {r["name"]: r.get("value") for r in results if r.get("category") == "performance"}
    (
        pathlib.Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/tmp")) / "jupyter-figures.json"
    ).write_text(json.dumps({"statuses": statuses, "figures": figures}, indent=1))
    bad = {
        n: (s, r.get("reason"))
        for r in results
        for n, s in [(r["name"], r["status"])]
        if s not in ("PASS", "SKIP")
    }
    assert not bad, bad
    # No Spark, Celery or storage tier in this scenario: their notebooks SKIP here and run in the lab step.
    assert statuses["notebooks.run.02-pyspark"] == "SKIP"
    assert statuses["notebooks.run.03-celery-canvas"] == "SKIP"
    assert statuses["notebooks.run.05-shared-data"] == "SKIP"
    # No OpenCL, MPI or GPU tier either: the hub host publishes no engines.opencl, mpi or gpu.
    assert statuses["notebooks.run.07-pyopencl"] == "SKIP"
    assert statuses["notebooks.run.12-mpi-ipyparallel"] == "SKIP"
    assert statuses["notebooks.run.13-pandas-on-spark"] == "SKIP"
    assert statuses["notebooks.run.14-cupy-numba-cuda"] == "SKIP"
    assert statuses["notebooks.run.15-luigi-pipeline"] == "SKIP"
    # The hub host's own notebooks run here: asyncio, threads and gevent; Numba and Pythran (g++).
    assert statuses["notebooks.run.10-async-threads-gevent"] == "PASS"
    assert statuses["notebooks.run.11-numba-pythran"] == "PASS"
    assert statuses["notebooks.run.01-dask-array-dataframe.placement"] == "PASS"
    control = run_suite(head, address, "notebooks.hub", inject="wrong-answer")
    assert {r["name"] for r in control if r["status"] == "FAIL"} >= {
        "notebooks.hub.anonymous",
        "notebooks.hub.kernel",
    }
