"""Run the s3.object check against an S3 endpoint (test helper, in the venv of aiobotocore.lock).

    python s3check_run.py SPEC.json RESULT.json

SPEC: {"token_file": path, "cases": {name: {"s3": engines.s3 section, "inject": null or a control}},
       "dask_text": optional {"url": "s3://...", "s3": engines.s3 section}}.
RESULT: {name: {result name: [status, reason]}}, and "dask_text": the lines dask.bag read from the URL.
PYTHONPATH holds the repository and tests/unit; the credentials come from the environment.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from checkrun import run_checks

from compute_jobs.checks import load_all
from compute_jobs.cluster import cluster_from_dict


def cluster(token_file: str, section: dict[str, Any]) -> Any:
    return cluster_from_dict(
        {
            "schema_version": 1,
            "cluster_name": "unit",
            "inventory_hash": "sha256:" + "ab" * 32,
            "run_id": "20261129T170000Z-unit",
            "hosts": [{"name": "a", "address": "127.0.0.1", "groups": ["head"], "cores": 1, "memory_mb": 16}],
            "net": {"port": 1, "token_file": token_file, "bytes": 65536},
            "engines": {"s3": section},
        }
    )


def dask_text(url: str, section: dict[str, Any]) -> list[str]:
    """The lines of an s3:// text object as Dask reads them (dask.bag over fsspec and s3fs)."""
    import dask.bag

    client_kwargs = {
        "region_name": section.get("region") or None,
        "endpoint_url": section.get("endpoint_url") or None,
    }
    options = {"client_kwargs": {k: v for k, v in client_kwargs.items() if v}}
    return [
        line.rstrip("\n")
        for line in dask.bag.read_text(url, storage_options=options).compute(scheduler="sync")
    ]


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    load_all()
    out: dict[str, Any] = {}
    for name, case in spec["cases"].items():
        config = {"inject": case["inject"]} if case.get("inject") else {}
        results = run_checks(cluster(spec["token_file"], case["s3"]), ["s3.object"], **config)
        out[name] = {key: [result.status, result.reason] for key, result in results.items()}
    if spec.get("dask_text"):
        out["dask_text"] = dask_text(spec["dask_text"]["url"], spec["dask_text"]["s3"])
    Path(sys.argv[2]).write_text(json.dumps(out, indent=2, sort_keys=True), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
