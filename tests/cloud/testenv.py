"""A virtual environment with dask-cloudprovider for the offline EC2Cluster test.

dask-cloudprovider[aws] pulls aiobotocore, which pins an older botocore than the controller's
boto3, so it cannot live in the controller venv. The test builds this venv once from the exact
pins of ``dask-cloudprovider.lock`` (wheels only, no resolver) under ``.cache/testenv/``; a change
of the lock or of the Python version builds a new one.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCK = Path(__file__).with_name("dask-cloudprovider.lock")


def dask_cloudprovider_python() -> Path:
    """The interpreter of the venv built from LOCK (built on first use, about 30 s)."""
    digest = hashlib.sha256(LOCK.read_bytes() + sys.version.encode()).hexdigest()[:12]
    root = REPO / ".cache" / "testenv" / f"dask-cloudprovider-{digest}"
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
