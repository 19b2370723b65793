"""A host that runs two components of one engine (a one-node cluster: the Spark master and a worker,
the Airflow server and a Celery worker) has one configuration file that both read. Each component's
play must write it the same: otherwise every converge rewrites it twice, restarts the services for
nothing, and leaves on disk what the last play wrote (the worker's airflow.cfg has no database, and
the server started from it after a reboot has none)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from localplay import ROOT, role_play, run_local_playbook

# Rendered as each component of one host in all the engine's groups (the role's defaults and vars
# as play vars, the secrets the role reads at converge given).
CASES = {
    "spark": {
        "template": "spark-defaults.conf.j2",
        "components": ["master", "worker"],
        "groups": ["spark_master", "spark_workers"],
        "server_only": "spark.deploy.defaultCores",
        "values": {"__spark_secret": "s" * 64, "spark_app_default_cores": 2},
    },
    "airflow": {
        "template": "airflow.cfg.j2",
        "components": ["server", "worker"],
        "groups": ["airflow", "celery_broker", "celery_workers"],
        "server_only": "sql_alchemy_conn",
        "values": {
            "__airflow_secret": {
                "fernet_seed": "f" * 64,
                "db_password": "db-password",
                "api_secret_key": "k" * 32,
                "jwt_secret": "j" * 32,
                "broker_password": "b" * 32,
            },
            "__airflow_fernet_key": "x" * 44,
        },
        "secrets": {"celery/redis_password": "r" * 32},
    },
}


def render(tmp_path: Path, engine: str) -> dict[str, str]:
    case = CASES[engine]
    role = ROOT / "roles" / engine
    play = tmp_path / "play.yml"
    play.write_text(
        role_play(
            role,
            f"""  tasks:
    - ansible.builtin.template:
        src: {role}/templates/{case["template"]}
        dest: "{{{{ out }}}}/{{{{ item }}}}"
        mode: "0600"
      vars:
        {engine}_component: "{{{{ item }}}}"
      loop: {case["components"]}
""",
        )
    )
    for name, text in case.get("secrets", {}).items():
        (tmp_path / "secrets" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "secrets" / name).write_text(text + "\n")
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("".join(f"[{group}]\nlocalhost\n" for group in case["groups"]))
    values = {
        "cluster_address": "127.0.0.1",
        "cluster_secrets_dir": str(tmp_path / "secrets"),
        "out": str(tmp_path),
        "ansible_python_interpreter": sys.executable,
        **case["values"],
    }
    rc, output = run_local_playbook(play, values, str(inventory))
    assert rc == 0, output[-3000:]
    return {component: (tmp_path / component).read_text() for component in case["components"]}


@pytest.mark.parametrize("engine", sorted(CASES))
def test_every_component_of_a_host_writes_its_configuration_the_same(tmp_path, engine):
    rendered = render(tmp_path, engine)
    texts = set(rendered.values())
    assert len(texts) == 1, f"{engine}: the components write different files: {sorted(rendered)}"
    assert CASES[engine]["server_only"] in texts.pop()
