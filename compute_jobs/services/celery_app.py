"""The Celery application of clusterforge: verification tasks run by the workers, called by the checks.

Workers run ``celery --app compute_jobs.services.celery_app worker`` (systemd units of the celery role); the
celery checks and users import it on the head node. Connection settings come from a JSON file on the
node, never from this code: ``$CLUSTERFORGE_CELERY_CONFIG``, else ``/etc/clusterforge/celery/celery.json``
(mode 0640, group ``celery``; the service account is a member). Its keys::

    broker_url          rediss://:PASSWORD@10.0.0.11:6379/0  (or amqps://celery:PASSWORD@host:5671/vhost)
    result_backend      rediss://:PASSWORD@10.0.0.11:6379/1  (redis:// where the broker serves plain TCP)
    tls_ca_file         CA file that must verify a rediss:// or amqps:// server (the cluster CA)
    shared_queue        queue every worker consumes (default "clusterforge")
    worker_queue_prefix own queue of each worker is <prefix><inventory hostname> (default "worker.")
    visibility_timeout  s before Redis redelivers an unacknowledged task (default 300)
    result_expires      s results are kept (default 3600)
    prefetch_multiplier messages a pool process reserves (default 1)
    broker              {"type", "host", "address", "port", "unit"}: what the resilience check restarts

Tasks are acknowledged after they ran (``acks_late``) and requeued when their pool process dies
(``reject_on_worker_lost``); with ``worker_prefetch_multiplier=1`` a crash loses nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import tempfile
import time
import urllib.parse
from typing import Any

from celery import Celery
from celery.worker.control import control_command

from compute_jobs.services.settings import ConfigError, load_json_settings

CONFIG_ENV = "CLUSTERFORGE_CELERY_CONFIG"
DEFAULT_CONFIG = "/etc/clusterforge/celery/celery.json"
TASK_PREFIX = "clusterforge."


def config_path(path: str | None = None) -> str:
    return path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG


def load_settings(path: str | None = None) -> dict[str, Any]:
    """Read the node's Celery settings; ConfigError says which file and what to do."""
    return load_json_settings(config_path(path), ("broker_url", "result_backend"), "celery", "celery")


def redis_tls(url: str, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The SSL options of a ``rediss://`` URL: the server's certificate must verify against the
    cluster CA (``tls_ca_file``) for the address dialled; None for any other URL."""
    if not url.startswith("rediss://"):
        return None
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}
    if settings.get("tls_ca_file"):
        options["ssl_ca_certs"] = settings["tls_ca_file"]
    return options


def amqp_tls(url: str, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The SSL options of an ``amqps://`` URL (RabbitMQ over TLS): the server's certificate must
    verify against the cluster CA (``tls_ca_file``) for the address dialled; None for any other URL."""
    if not url.startswith("amqps://"):
        return None
    options: dict[str, Any] = {
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": urllib.parse.urlsplit(url).hostname,
    }
    if settings.get("tls_ca_file"):
        options["ca_certs"] = settings["tls_ca_file"]
    return options


def celery_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Celery configuration from the node settings (the reliability choices live here)."""
    visibility = int(settings.get("visibility_timeout", 300))
    tls: dict[str, Any] = {}
    if broker_ssl := redis_tls(settings["broker_url"], settings) or amqp_tls(
        settings["broker_url"], settings
    ):
        tls["broker_use_ssl"] = broker_ssl
    if backend_ssl := redis_tls(settings["result_backend"], settings):
        tls["redis_backend_use_ssl"] = backend_ssl
    return tls | {
        "broker_url": settings["broker_url"],
        "result_backend": settings["result_backend"],
        "task_default_queue": settings.get("shared_queue", "clusterforge"),
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_track_started": True,
        "worker_prefetch_multiplier": int(settings.get("prefetch_multiplier", 1)),
        "broker_transport_options": {"visibility_timeout": visibility},
        "result_backend_transport_options": {"visibility_timeout": visibility},
        "result_expires": int(settings.get("result_expires", 3600)),
        "broker_connection_retry_on_startup": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "enable_utc": True,
    }


def create_app(settings: dict[str, Any] | None = None) -> Celery:
    """A Celery app with the verification tasks; ``settings`` None leaves it unconfigured."""
    app = Celery("clusterforge", set_as_current=False)
    if settings is not None:
        app.conf.update(celery_settings(settings))
        app.conf.clusterforge = settings
    _register_tasks(app)
    return app


def _register_tasks(app: Celery) -> None:
    @app.task(name=TASK_PREFIX + "add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name=TASK_PREFIX + "mul", shared=False)
    def mul(x: int, y: int) -> int:
        return x * y

    @app.task(name=TASK_PREFIX + "square", shared=False)
    def square(x: int) -> int:
        return x * x

    @app.task(name=TASK_PREFIX + "xsum", shared=False)
    def xsum(values: list[int]) -> int:
        return sum(values)

    @app.task(name=TASK_PREFIX + "echo", shared=False)
    def echo(value: Any) -> Any:
        return value

    @app.task(name=TASK_PREFIX + "whoami", bind=True, shared=False)
    def whoami(self: Any, token: Any = None) -> dict[str, Any]:
        info = self.request.delivery_info or {}
        return {
            "token": token,
            "host": socket.gethostname(),
            "worker": self.request.hostname,
            "pid": os.getpid(),
            "queue": info.get("routing_key"),
        }

    @app.task(name=TASK_PREFIX + "slow_double", bind=True, shared=False)
    def slow_double(self: Any, value: int, seconds: float, hold: float = 0.0) -> dict[str, Any]:
        """Announce the pool process running it (state PROGRESS), sleep, return 2 * value.

        ``parent`` is the worker's main process (the prefork pool's parent): a restarted worker has
        another, so the drain probe can tell a host's work before its restart from the work after.

        The resilience check kills the announced process mid-sleep; the requeued delivery must run
        in another pool process and still return 2 * value. With ``hold``, the first delivery of the
        task sleeps that long instead of ``seconds``: it waits for its kill, however late on a
        loaded host the kill comes, and the redelivery ends after ``seconds``.
        """
        me = {
            "pid": os.getpid(),
            "parent": os.getppid(),
            "host": socket.gethostname(),
            "worker": self.request.hostname,
        }
        first = hold > 0 and _first_delivery(self.request.id)
        self.update_state(state="PROGRESS", meta=me)
        time.sleep(hold if first else seconds)
        info = self.request.delivery_info or {}
        if hold > 0:
            _delivered(self.request.id)
        return {**me, "value": 2 * value, "redelivered": bool(info.get("redelivered"))}


def _marker(task_id: str) -> str:
    return os.path.join(tempfile.gettempdir(), f"clusterforge-slow-double-{task_id}")


def _first_delivery(task_id: str) -> bool:
    """True the first time a pool process of this node runs ``task_id`` (an exclusive marker file)."""
    try:
        os.close(os.open(_marker(task_id), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    return True


def _delivered(task_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_marker(task_id))


@control_command(args=[("pid", int)], signature="<pid>")
def cf_kill_pool_child(state: Any, pid: int) -> dict[str, str]:
    """Remote control: SIGKILL one of this worker's own pool processes (the resilience check).

    Only pids of the worker's pool are accepted, so the command cannot signal anything else.
    """
    pool = state.consumer.pool
    children = set(getattr(pool, "info", {}).get("processes", []))
    if pid not in children:
        return {"error": f"pid {pid} is not a pool process of this worker ({sorted(children)})"}
    os.kill(pid, signal.SIGKILL)
    return {"ok": f"killed pool process {pid}"}


def _module_app() -> Celery:
    if os.environ.get(CONFIG_ENV):
        # A worker or Flower unit names its file: failing here is better than a default broker.
        return create_app(load_settings())
    try:
        return create_app(load_settings())
    except ConfigError:
        # Importable without the node file (docs, tooling); nothing can be sent until configured.
        return create_app(None)


app = _module_app()
