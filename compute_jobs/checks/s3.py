"""Object storage: write, list, read back and delete one small object in the cluster's S3 bucket.

What Dask (``s3://`` through s3fs) and pandas need on a node: s3fs finds the credentials on its
own (on AWS, the instance profile ``cloud_up.yml`` gives the nodes when a bucket is declared).

cluster.json ``engines.s3`` (present only when the inventory declares a bucket)::

    {
      "bucket": "my-team-data",     the cluster's bucket
      "prefix": "runs/",            key prefix the nodes may use ("" for the whole bucket)
      "region": "us-east-1",        optional
      "endpoint_url": ""            optional: an S3-compatible endpoint instead of AWS
    }

The Dask client configuration on the head node publishes it (roles/dask, inputs ``dask_s3_*`` from
``cloud_s3_*``). Without a bucket (``bucket: ""``, or no ``engines.s3`` where Dask is not provisioned)
the check is SKIP, saying that object storage is not a declared capability. A declared bucket that the
node cannot write, list or read (missing bucket, credentials refused) is a FAIL naming the cause: the
cluster does not give what the inventory declares.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from compute_jobs.context import CheckContext
from compute_jobs.model import FAIL, Check, CheckError, Param, Result, register

ENGINE = "s3"
# Where the check leaves its object, under the prefix (removed before the check ends).
CHECK_DIR = ".clusterforge-check"
PIN = "s3fs==2026.9.0"


def filesystem(section: Mapping[str, Any]) -> Any:
    """An s3fs filesystem for the section (s3fs imported here: nodes without a bucket never need it)."""
    try:
        import s3fs
    except ImportError as error:
        raise CheckError(
            f"s3fs is not installed in this node's Python ({error}): install {PIN} in the node venv"
        ) from error
    client_kwargs: dict[str, Any] = {}
    if section.get("region"):
        client_kwargs["region_name"] = str(section["region"])
    if section.get("endpoint_url"):
        client_kwargs["endpoint_url"] = str(section["endpoint_url"])
    # No listing cache: the check must see what the store holds after each step.
    return s3fs.S3FileSystem(client_kwargs=client_kwargs, use_listings_cache=False, skip_instance_cache=True)


def access_errors() -> tuple[type[BaseException], ...]:
    """What s3fs and botocore raise when the bucket cannot be used (missing, denied, no credentials)."""
    errors: tuple[type[BaseException], ...] = (OSError, ValueError)
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return errors
    return (*errors, BotoCoreError, ClientError)


def object_path(section: Mapping[str, Any], target: str, token: str) -> str:
    """bucket/prefix/.clusterforge-check/<target>-<token>."""
    bucket = str(section["bucket"]).strip("/")
    prefix = str(section.get("prefix") or "").strip("/")
    parts = [bucket, *([prefix] if prefix else []), CHECK_DIR, f"{target}-{token}"]
    return "/".join(parts)


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@register
class S3Object(Check):
    name = "s3.object"
    category = "correctness"
    tags = frozenset({"s3", "cloud"})
    description = "Write, list, read back and delete a small object under the cluster's S3 prefix with s3fs"
    params = (
        Param("size", int, 1_048_576, "bytes of the object", 1, 64 * 1_048_576, smoke=4096),
        Param("seed", int, 20261129, "seed of the object's bytes", 0),
    )
    correctness_rule = (
        "SHA-256 of the bytes read back == SHA-256 of the bytes written; the object's key is in the "
        "listing of its directory; after the delete the object no longer exists"
    )
    engine = ENGINE
    timeout = 60.0

    def applies(self, ctx: CheckContext) -> str | None:
        if not ctx.cluster.engines[ENGINE].get("bucket"):
            return (
                "no S3 bucket is declared (cloud_s3_bucket / dask_s3_bucket is empty): object storage "
                "is not a capability of this cluster"
            )
        return None

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        section = ctx.cluster.engines[ENGINE]
        fs = filesystem(section)
        path = object_path(section, ctx.target, uuid.uuid4().hex[:12])
        data = payload(ctx.params.size, ctx.params.seed)
        details = {
            "object": f"s3://{path}",
            "bytes": len(data),
            "endpoint": section.get("endpoint_url") or "AWS",
        }
        try:
            fs.pipe_file(path, data)
            listed = [str(entry).rstrip("/") for entry in fs.ls(path.rsplit("/", 1)[0], detail=False)]
            read = fs.cat_file(path)
        except access_errors() as error:  # PermissionError, FileNotFoundError, NoCredentialsError...
            # The bucket is declared: that this node cannot use it is the cluster's failure.
            yield ctx.result(
                f"{self.name}.roundtrip",
                status=FAIL,
                reason=f"s3://{path}: {type(error).__name__}: {error}. Check that the bucket exists and "
                "that this node's credentials (on AWS: the cluster's instance profile) allow it",
                details=details,
            )
            return
        finally:
            with contextlib.suppress(*access_errors()):
                fs.rm_file(path)
        yield ctx.compare(
            hashlib.sha256(data).hexdigest(),
            hashlib.sha256(read).hexdigest(),
            name=f"{self.name}.roundtrip",
            rule="SHA-256 of the bytes read back == SHA-256 of the bytes written",
            details=details,
        )
        yield ctx.compare(
            True,
            path in listed,
            name=f"{self.name}.listed",
            rule="the written key is in the listing of its directory",
            details={**details, "listed": listed[:20]},
        )
        yield ctx.compare(
            False,
            bool(fs.exists(path)),
            name=f"{self.name}.deleted",
            rule="after the delete, the object no longer exists",
            details=details,
        )
