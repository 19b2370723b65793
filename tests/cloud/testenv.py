"""A second virtual environment for the offline tests of what runs on aiobotocore.

dask-cloudprovider[aws] and s3fs pull aiobotocore, which pins an older botocore than the
controller's boto3, so they cannot live in the controller venv. The tests build this venv once
from the exact pins of ``aiobotocore.lock`` (wheels only, no resolver) under ``.cache/testenv/``;
a change of the lock or of the Python version builds a new one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCK = Path(__file__).with_name("aiobotocore.lock")


def aiobotocore_python() -> Path:
    """The interpreter of the venv built from LOCK (built on first use, about 30 s)."""
    digest = hashlib.sha256(LOCK.read_bytes() + sys.version.encode()).hexdigest()[:12]
    root = REPO / ".cache" / "testenv" / f"aiobotocore-{digest}"
    python = root / "bin" / "python"
    if (root / ".complete").is_file():
        return python
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--only-binary=:all:", "-r", str(LOCK)],
        check=True,
        timeout=900,
    )
    (root / ".complete").write_text(LOCK.read_text(encoding="utf-8"), encoding="utf-8")
    return python


def run(script: Path, *args: str, env: dict[str, str], timeout: int) -> subprocess.CompletedProcess[str]:
    """Run SCRIPT with the venv's Python; ENV on top of this environment without AWS_* and DASK_*."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "DASK_"))}
    return subprocess.run(
        [str(aiobotocore_python()), str(script), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
