"""The airflow tier as a user relies on it: services up, credentials required everywhere, DAG runs
triggered over the REST API succeed with the known answers, the Luigi pipeline runs through luigid."""

import base64
import json
import os
import pathlib
import sys
import textwrap

import pytest

SECRETS = pathlib.Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "secrets"
USER = "clusterforge"
# Runs the checks and reads the client credentials (group CLIENTS); USER, the service account, reads none.
VERIFY, CLIENTS = "clusterforge-verify", "clusterforge-clients"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "_shared"))
from services import assert_comes_back_after_a_clean_exit, assert_restart_always, restarts  # noqa: E402

UNITS = [
    "postgresql",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "luigid",
    "nginx",
]

TRIGGER = textwrap.dedent(
    """
    import json, ssl, sys, time, urllib.request
    c = json.load(open("/etc/clusterforge/airflow/client.json"))
    tls = ssl.create_default_context(cafile=c["ca_file"])
    def call(method, path, body=None, token=None):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = "Bearer " + token
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(c["api_url"] + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30, context=tls) as r:
            return json.load(r)
    tok = call("POST", "/auth/token", {"username": c["username"], "password": c["password"]})["access_token"]
    dag, conf, last = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    run = call("POST", f"/api/v2/dags/{dag}/dagRuns", {"logical_date": None, "conf": conf}, tok)
    rid = urllib.request.quote(run["dag_run_id"], safe="")
    deadline = time.time() + 240
    while time.time() < deadline:
        state = call("GET", f"/api/v2/dags/{dag}/dagRuns/{rid}", token=tok)["state"]
        if state in ("success", "failed"):
            break
        time.sleep(1)
    tis = call("GET", f"/api/v2/dags/{dag}/dagRuns/{rid}/taskInstances", token=tok)["task_instances"]
    value = None
    if state == "success":
        value = call("GET", f"/api/v2/dags/{dag}/dagRuns/{rid}/taskInstances/{last}/xcomEntries/return_value",
                     token=tok)["value"]
    summary = [[t["task_id"], t["state"], t["hostname"]] for t in tis]
    print(json.dumps({"state": state, "tis": summary, "value": value}))
    """
)


def as_user(host, command, *args):
    return host.run("cd /tmp && runuser -u %s -- " + command, VERIFY, *args)


def test_services_are_active(host):
    for unit in UNITS:
        assert host.service(unit).is_running, unit
        assert host.service(unit).is_enabled, unit
        if unit not in ("postgresql", "nginx"):  # Debian's units, not the roles' own
            assert_restart_always(host, unit)


def test_a_cleanly_stopped_daemon_comes_back(host):
    """luigid answers SIGTERM with status 0: Restart=always starts it again."""
    before = restarts(host, "luigid")
    assert host.run("systemctl kill -s TERM luigid").rc == 0
    assert_comes_back_after_a_clean_exit(host, "luigid", before)


@pytest.mark.parametrize("unit", ["airflow-triggerer", "airflow-dag-processor"])
def test_an_airflow_daemon_ended_cleanly_comes_back(host, unit):
    """Airflow's daemons answer SIGTERM with status 0 (a clean shutdown): only Restart=always, not
    on-failure, starts them again. The scheduler and the API server keep running for the DAG runs
    below."""
    before = restarts(host, unit)
    assert host.run("systemctl kill -s TERM --kill-whom=main %s", unit).rc == 0
    assert_comes_back_after_a_clean_exit(host, unit, before, timeout=180)


def test_services_bind_where_they_should(host):
    address = host.interface.default().addresses[0]
    assert host.socket(f"tcp://{address}:8090").is_listening
    assert host.socket(f"tcp://{address}:8082").is_listening
    assert host.socket("tcp://127.0.0.1:8083").is_listening
    assert not host.socket(f"tcp://{address}:8083").is_listening
    assert host.socket("tcp://127.0.0.1:5432").is_listening
    assert not host.socket(f"tcp://{address}:5432").is_listening
    assert not host.socket("tcp://0.0.0.0:80").is_listening


def test_database_needs_the_password(host):
    password = (SECRETS / "airflow" / "db_password").read_text().strip()
    query = "psql -w -h 127.0.0.1 -U airflow -d airflow -tAc 'select count(*) from dag'"
    refused = host.run("env -u PGPASSWORD " + query)
    assert refused.rc != 0
    assert "password" in refused.stderr
    wrong = host.run("PGPASSWORD=wrong " + query)
    assert wrong.rc != 0 and "password authentication failed" in wrong.stderr
    allowed = host.run("PGPASSWORD=%s " + query, password)
    assert allowed.rc == 0, allowed.stderr
    assert int(allowed.stdout.strip()) >= 2


def test_secrets_are_private(host):
    for path, group in (
        ("/etc/clusterforge/airflow/airflow.cfg", "airflow"),
        ("/etc/clusterforge/airflow/client.json", CLIENTS),
        ("/etc/clusterforge/luigi/client.cfg", CLIENTS),
        ("/etc/clusterforge/luigi/htpasswd", "www-data"),
    ):
        f = host.file(path)
        assert f.mode == 0o640, path
        assert (f.user, f.group) == ("root", group), path
    for name in ("db_password", "admin_password", "client_password", "jwt_secret"):
        assert (SECRETS / "airflow" / name).stat().st_mode & 0o777 == 0o600


def test_no_restart_rule_without_the_resilience_checks(host):
    """This inventory does not run the resilience checks: the service account may not restart
    anything, and the role publishes no restart command for a check to try."""
    assert not host.file("/etc/sudoers.d/clusterforge-airflow-restart").exists
    assert host.run("runuser -u %s -- sudo -n -l", USER).rc != 0
    fact = json.loads(host.file("/etc/ansible/facts.d/clusterforge_engine_airflow.fact").content_string)
    assert fact.get("restart_commands") == {} and fact.get("restart_units") == {}


def test_fernet_key_is_32_random_bytes_and_encrypts(host):
    key = (SECRETS / "airflow" / "fernet_key").read_text().strip()
    assert len(base64.urlsafe_b64decode(key)) == 32
    assert (SECRETS / "airflow" / "fernet_key").stat().st_mode & 0o777 == 0o600
    cfg = host.file("/etc/clusterforge/airflow/airflow.cfg").content_string
    line = next(x for x in cfg.splitlines() if x.startswith("fernet_key = "))
    assert line.removeprefix("fernet_key = ").split(",")[0] == key


def test_no_world_writable_directory_and_the_pipelines_belongs_to_its_writers(host):
    """The pipeline's work directory is written by Airflow's tasks, Luigi runs and the Dask workers:
    members of the pipeline group only (setgid, sticky), not the world. Nothing under the roles'
    paths is world-writable (systemd's private /tmp of each unit sits in a directory only root may
    enter)."""
    roots = "/var/tmp /etc/clusterforge /opt/clusterforge /var/lib"
    found = host.run(
        f"find {roots} -mindepth 1 -xdev -path '/var/tmp/systemd-private-*' -prune "
        "-o -type d -perm -0002 -print"
    ).stdout.split()
    assert found == [], found
    work = host.file("/var/tmp/clusterforge-pipeline")
    assert (work.user, work.group, work.mode) == ("root", "clusterforge-pipeline", 0o3770)
    assert "clusterforge-pipeline" in host.user("clusterforge").groups
    unit = host.run("systemctl show -p SupplementaryGroups --value airflow-scheduler").stdout.split()
    assert unit == ["clusterforge-pipeline"], unit
    # a member may create a run directory there (it inherits the group); another account may not
    probe = "/var/tmp/clusterforge-pipeline/cf-test-probe"
    made = host.run("runuser -u clusterforge -- mkdir %s && stat -c %%G %s && rmdir %s", probe, probe, probe)
    assert made.rc == 0 and made.stdout.strip() == "clusterforge-pipeline", made.stderr
    assert host.run("runuser -u nobody -- mkdir %s", probe).rc != 0
    assert host.run("runuser -u nobody -- ls /var/tmp/clusterforge-pipeline").rc != 0


# curl trusting the cluster CA, with the HTTP status on stdout
CURL = "curl -s --cacert /etc/clusterforge/tls/ca.crt -o /dev/null -w '%%{http_code}' "


def test_api_is_https_only_with_a_certificate_of_the_cluster_ca(host):
    """Logins and tokens never cross in clear text: a plain-HTTP request gets no HTTP answer, and
    the server's certificate verifies against the cluster CA for its address."""
    address = host.interface.default().addresses[0]
    assert host.run(CURL + "https://%s:8090/api/v2/monitor/health", address).stdout == "200"
    plain = host.run("curl -s -o /dev/null -w '%%{http_code}' http://%s:8090/api/v2/monitor/health", address)
    assert plain.stdout == "000", "a TLS-only server has no HTTP answer for plain text"
    client = json.loads(host.file("/etc/clusterforge/airflow/client.json").content_string)
    assert (
        client["api_url"] == f"https://{address}:8090" and client["ca_file"] == "/etc/clusterforge/tls/ca.crt"
    )
    cfg = host.file("/etc/clusterforge/airflow/airflow.cfg").content_string
    assert f"execution_api_server_url = https://{address}:8090/execution/" in cfg


READ_LOG_URL = textwrap.dedent(
    """
    import logging, types
    from airflow.logging_config import configure_logging
    configure_logging()
    handler = next(h for h in logging.getLogger("airflow.task").handlers if h.name == "task")
    ti = types.SimpleNamespace(hostname="cf-worker-7", triggerer_job=None)
    print(type(handler).__name__, handler._get_log_retrieval_url(ti, "dag_id=x/attempt=1.log")[0])
    """
)


def test_the_api_server_reads_the_workers_log_servers_over_https(host):
    """Airflow's own handler dials http://<worker>:8793; the API server's (the cluster's logging
    configuration, loaded the way every Airflow process loads it) dials https:// and trusts the
    cluster CA only."""
    probe = host.run(
        "cd /tmp && runuser -u airflow -- env AIRFLOW_HOME=/var/lib/airflow"
        " AIRFLOW_CONFIG=/etc/clusterforge/airflow/airflow.cfg"
        " /opt/clusterforge/airflow-venv/bin/python -c %s",
        READ_LOG_URL,
    )
    assert probe.rc == 0, probe.stderr
    # Airflow logs (to stdout) that it loaded a logging configuration of the user's: the last line is ours.
    assert probe.stdout.strip().splitlines()[-1].split() == [
        "HttpsServedLogsTaskHandler",
        "https://cf-worker-7:8793/log/dag_id=x/attempt=1.log",
    ]
    unit = host.run("systemctl show -p Environment airflow-api-server").stdout
    assert "REQUESTS_CA_BUNDLE=/etc/clusterforge/tls/ca.crt" in unit


def test_api_refuses_anonymous_and_wrong_passwords(host):
    address = host.interface.default().addresses[0]
    anonymous = host.run(CURL + "https://%s:8090/api/v2/dags", address)
    assert anonymous.stdout == "401"
    wrong = host.run(
        CURL + "-H 'Content-Type: application/json' "
        '-d \'{"username": "admin", "password": "wrong"}\' https://%s:8090/auth/token',
        address,
    )
    assert wrong.stdout == "401"
    admin = (SECRETS / "airflow" / "admin_password").read_text().strip()
    right = host.run(
        CURL + "-H 'Content-Type: application/json' "
        '-d \'{"username": "admin", "password": "%s"}\' https://%s:8090/auth/token',
        admin,
        address,
    )
    assert right.stdout in ("200", "201")


def test_health_body_reports_every_component_healthy(host):
    address = host.interface.default().addresses[0]
    body = json.loads(
        host.check_output(
            "curl -s --cacert /etc/clusterforge/tls/ca.crt https://%s:8090/api/v2/monitor/health", address
        )
    )
    assert {k: v["status"] for k, v in body.items()} == dict.fromkeys(
        ["metadatabase", "scheduler", "triggerer", "dag_processor"], "healthy"
    )


@pytest.fixture(scope="module")
def trigger(host):
    encoded = base64.b64encode(TRIGGER.encode()).decode()
    host.run_expect([0], "echo %s | base64 -d > /tmp/cf-trigger.py && chmod 0644 /tmp/cf-trigger.py", encoded)

    def run(dag, conf, last):
        out = as_user(host, "python3 /tmp/cf-trigger.py %s %s %s", dag, json.dumps(conf), last)
        assert out.rc == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    return run


def test_fanout_dag_run_over_the_api_gives_the_exact_total(trigger):
    n, k = 100_000, 3
    result = trigger("clusterforge_fanout", {"n": n, "k": k}, "total")
    assert result["state"] == "success", result["tis"]
    assert all(state == "success" for _, state, _ in result["tis"])
    assert len([t for t in result["tis"] if t[0].startswith("partial_sum")]) == k
    assert result["value"]["total"] == n * (n - 1) // 2


def test_pipeline_dag_gives_the_known_answer(trigger):
    result = trigger("clusterforge_pipeline", {"files": 4, "mib": 2, "seed": 11}, "verify")
    assert result["state"] == "success", result["tis"]
    m = 4 * 2 * 2**20 // 8
    assert result["value"]["ok"] is True
    assert result["value"]["observed"]["sum"] == str(m * (m - 1) // 2)
    assert result["value"]["backends"] == {"generate": "local", "process": "local", "aggregate": "local"}


def test_luigi_refuses_anonymous_and_runs_the_pipeline(host):
    """The scheduler's door is HTTPS with the cluster CA: plain HTTP is refused, so is a request
    without the password, and a client that trusts the cluster CA runs the pipeline through it."""
    address = host.interface.default().addresses[0]
    url = f"https://{address}:8082/api/task_list"
    status = "curl -s -o /dev/null -w '%%{http_code}' "
    anonymous = host.run(status + "--cacert /etc/clusterforge/tls/ca.crt %s", url)
    assert anonymous.stdout == "401"
    plain = host.run(status + "http://%s:8082/api/task_list", address)
    assert plain.stdout == "400", "nginx answers plain HTTP on its TLS port with 400"
    # One public root CA of Debian's bundle, and nothing else (curl would add the system store,
    # which holds the cluster CA): the scheduler's certificate must not verify against it.
    untrusted = host.run(
        "python3 -c 'import ssl, sys, urllib.request; "
        "urllib.request.urlopen(sys.argv[2], context=ssl.create_default_context(cafile=sys.argv[1]))' "
        '"$(ls /usr/share/ca-certificates/mozilla/*.crt | head -1)" %s',
        url,
    )
    assert untrusted.rc != 0 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr, untrusted.stderr[-500:]
    out = as_user(
        host,
        "env LUIGI_CONFIG_PATH=/etc/clusterforge/luigi/client.cfg "
        "REQUESTS_CA_BUNDLE=/etc/clusterforge/tls/ca.crt "
        "CLUSTERFORGE_PIPELINE_CONFIG=/etc/clusterforge/luigi/pipeline.json "
        "/opt/clusterforge/luigi-venv/bin/python -m clusterforge_pipeline.luigi_tasks "
        "--run-id molecule-1 --files 2 --mib 1",
    )
    assert out.rc == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["luigi_status"] == "SUCCESS"
    assert result["verify"]["ok"] is True
