"""Airflow's logging configuration with one change: the task log handler reads the workers' log
servers over HTTPS.

Installed by the clusterforge airflow role into ``$AIRFLOW_HOME/config`` (on ``sys.path`` of every
Airflow process) and named by ``[logging] logging_config_class``. Airflow's file task handler builds ``http://<worker>:<port>/log/...``
for a task whose log is not on the API server's disk; the workers' log servers serve HTTPS only
(``airflow_log_server_tls``), with certificates from the cluster CA that the API server's
``REQUESTS_CA_BUNDLE`` names. Everything else is Airflow's default configuration.
"""

from __future__ import annotations

from copy import deepcopy

from airflow.config_templates.airflow_local_settings import DEFAULT_LOGGING_CONFIG
from airflow.utils.log.file_task_handler import FileTaskHandler


class HttpsServedLogsTaskHandler(FileTaskHandler):
    """Airflow's file task handler that fetches served logs with https:// instead of http://."""

    def _get_log_retrieval_url(self, ti, log_relative_path, log_type=None):
        url, relative = super()._get_log_retrieval_url(ti, log_relative_path, log_type=log_type)
        if url and url.startswith("http://"):
            url = "https://" + url.removeprefix("http://")
        return url, relative


LOGGING_CONFIG = deepcopy(DEFAULT_LOGGING_CONFIG)
LOGGING_CONFIG["handlers"]["task"]["class"] = f"{__name__}.HttpsServedLogsTaskHandler"
