"""The s3.object check (compute_jobs/checks/s3.py): SKIP without a bucket, ERROR that says what to do
without s3fs, and for real with s3fs against a moto S3 server on 127.0.0.1 (PASS, the wrong-answer
control FAILs, a missing bucket is an ERROR naming it, nothing is left in the bucket)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from checkrun import run_checks

from compute_jobs.checks import load_all

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cloud"))
cloudtest = importlib.import_module("cloudtest")
testenv = importlib.import_module("testenv")
load_all()


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from cloudtest.start_moto(tmp_path_factory.mktemp("cloud-s3"))


def test_listed_and_skipped_without_a_bucket(cj_cluster: Any) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "compute_jobs", "list"],
        cwd=cloudtest.REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "s3.object" in done.stdout
    result = run_checks(cj_cluster(), ["s3.object"])["s3.object"]
    assert result.status == "SKIP" and "engines.s3" in result.reason


def test_without_s3fs_the_error_says_what_to_install(
    cj_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)  # as on a node without it
    results = run_checks(cj_cluster(engines={"s3": {"bucket": "cf-data"}}), ["s3.object"])
    (result,) = results.values()
    assert result.status == "ERROR" and "install s3fs==2026.9.0" in result.reason


def test_against_moto_pass_control_missing_bucket_nothing_left(
    moto: Any, cj_token_file: Path, tmp_path: Path
) -> None:
    s3 = moto.client("s3")
    s3.create_bucket(Bucket="cf-data")
    s3.put_object(Bucket="cf-data", Key="runs/keep.csv", Body=b"a,b\n1,2\n")
    section = {"bucket": "cf-data", "prefix": "runs/", "region": cloudtest.REGION, "endpoint_url": moto.url}
    cases = {
        "ok": {"s3": section},
        "control": {"s3": section, "inject": "wrong-answer"},
        "no-bucket": {"s3": {**section, "bucket": "cf-missing"}},
    }
    spec, result_file = tmp_path / "spec.json", tmp_path / "result.json"
    spec.write_text(json.dumps({"token_file": str(cj_token_file), "cases": cases}))
    path = os.pathsep.join([str(cloudtest.REPO), str(cloudtest.REPO / "tests" / "unit")])
    done = testenv.run(
        cloudtest.REPO / "tests" / "cloud" / "s3check_run.py",
        str(spec),
        str(result_file),
        env={**cloudtest.FAKE_CREDENTIALS, "HOME": str(tmp_path), "PYTHONPATH": path},
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    results = json.loads(result_file.read_text())

    ok = results["ok"]
    assert sorted(ok) == ["s3.object.deleted", "s3.object.listed", "s3.object.roundtrip"]
    assert {status for status, _ in ok.values()} == {"PASS"}, ok
    assert "FAIL" in {status for status, _ in results["control"].values()}, results["control"]
    (missing,) = results["no-bucket"].values()
    assert missing[0] == "ERROR" and "s3://cf-missing/runs/.clusterforge-check/" in missing[1], missing
    assert "instance profile" in missing[1]

    keys = [item["Key"] for item in s3.list_objects_v2(Bucket="cf-data").get("Contents", [])]
    assert keys == ["runs/keep.csv"], "the check removes its object and touches nothing else"
