"""The file pipeline that users of a clusterforge cluster run, shared by Airflow, Luigi and the checks.

Generate a set of seeded binary files on the nodes, summarise each file in parallel (on the Dask
cluster when one is provisioned), aggregate the per-file summaries (on the Spark cluster when one is
provisioned) and compare the result with an answer known in closed form.

The package only uses relative imports and the standard library at import time (numpy, dask,
pyspark and luigi are imported where they are used). One name everywhere: the DAGs in ``dags/``, the
Luigi tasks and the Airflow and Luigi checks import ``clusterforge_pipeline``, and one role
(``roles/pipeline``) deploys this directory unchanged to the nodes.

Modules:
- ``spec``: the pipeline specification and the closed-form answers (stdlib only);
- ``data``: writing and summarising one file, combining summaries (numpy);
- ``engines``: the Dask, Spark and local back ends of each step;
- ``steps`` / ``__main__``: one step per process, JSON in and out, run in the cluster venv;
- ``orchestrate``: how Airflow tasks and Luigi tasks call a step (subprocess, stdlib only);
- ``luigi_tasks``: the same pipeline as Luigi tasks.
"""

__all__ = ["data", "engines", "orchestrate", "spec", "steps"]
