"""The s3.object check (compute_jobs/checks/s3.py): SKIP without a bucket, ERROR that says what to do
without s3fs, and for real with s3fs against a moto S3 server on 127.0.0.1 with its IAM checks on
(the node's credentials hold a policy shaped like the cluster's instance profile, scoped to a prefix):
PASS; FAIL for the wrong-answer control, a missing bucket, a prefix outside the policy and unknown
credentials; nothing is left in the bucket; Dask reads an s3:// object through the same s3fs."""

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
    """No engines.s3 (no Dask), or engines.s3 with an empty bucket (none declared): SKIP, saying why."""
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
    empty = {"bucket": "", "prefix": "", "region": "", "endpoint_url": ""}
    result = run_checks(cj_cluster(engines={"s3": empty}), ["s3.object"])["s3.object"]
    assert result.status == "SKIP", result
    assert "no S3 bucket is declared" in result.reason and "not a capability" in result.reason


def test_without_s3fs_the_error_says_what_to_install(
    cj_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)  # as on a node without it
    results = run_checks(cj_cluster(engines={"s3": {"bucket": "cf-data"}}), ["s3.object"])
    (result,) = results.values()
    assert result.status == "ERROR" and "install s3fs==2026.9.0" in result.reason


# What the node's credentials may do: the statements of the cluster's instance-profile policy
# (roles/cloud_aws/vars/main.yml, __cloud_aws_s3_policy) for bucket cf-data and prefix runs/.
NODE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "s3:GetBucketLocation", "Resource": "arn:aws:s3:::cf-data"},
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::cf-data"},
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
            "Resource": "arn:aws:s3:::cf-data/runs/*",
        },
    ],
}


def run_cases(spec: dict[str, Any], credentials: dict[str, str], tmp_path: Path, token_file: Path) -> Any:
    spec_file, result_file = tmp_path / "spec.json", tmp_path / "result.json"
    spec_file.write_text(json.dumps({"token_file": str(token_file), **spec}))
    result_file.unlink(missing_ok=True)
    path = os.pathsep.join([str(cloudtest.REPO), str(cloudtest.REPO / "tests" / "unit")])
    done = testenv.run(
        cloudtest.REPO / "tests" / "cloud" / "s3check_run.py",
        str(spec_file),
        str(result_file),
        env={
            **credentials,
            "AWS_DEFAULT_REGION": cloudtest.REGION,
            "HOME": str(tmp_path),
            "PYTHONPATH": path,
        },
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return json.loads(result_file.read_text())


def test_against_moto_pass_controls_fail_nothing_left_dask_reads(
    moto: Any, cj_token_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto import settings

    s3, iam = moto.client("s3"), moto.client("iam")
    s3.create_bucket(Bucket="cf-data")
    s3.put_object(Bucket="cf-data", Key="runs/keep.csv", Body=b"a,b\n1,2\n")
    iam.create_user(UserName="cf-node")
    iam.put_user_policy(
        UserName="cf-node", PolicyName="clusterforge-s3", PolicyDocument=json.dumps(NODE_POLICY)
    )
    key = iam.create_access_key(UserName="cf-node")["AccessKey"]
    node = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    stranger = {
        "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "not-a-key-of-this-account",
    }
    section = {"bucket": "cf-data", "prefix": "runs/", "region": cloudtest.REGION, "endpoint_url": moto.url}
    cases = {
        "ok": {"s3": section},
        "control": {"s3": section, "inject": "wrong-answer"},
        "no-bucket": {"s3": {**section, "bucket": "cf-missing"}},
        "outside-prefix": {"s3": {**section, "prefix": "other/"}},
    }
    # From here on moto checks every request's signature and the IAM policies of its caller.
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    results = run_cases(
        {"cases": cases, "dask_text": {"url": "s3://cf-data/runs/keep.csv", "s3": section}},
        node,
        tmp_path,
        cj_token_file,
    )
    denied = run_cases({"cases": {"stranger": {"s3": section}}}, stranger, tmp_path, cj_token_file)
    # No credentials at all (no instance profile, nothing in the environment or ~/.aws).
    bare = run_cases({"cases": {"bare": {"s3": section}}}, {}, tmp_path, cj_token_file)
    monkeypatch.undo()

    ok = results["ok"]
    assert sorted(ok) == ["s3.object.deleted", "s3.object.listed", "s3.object.roundtrip"]
    assert {status for status, _ in ok.values()} == {"PASS"}, ok
    assert "FAIL" in {status for status, _ in results["control"].values()}, results["control"]
    for name, where in (("no-bucket", "s3://cf-missing/runs/"), ("outside-prefix", "s3://cf-data/other/")):
        (failed,) = results[name].values()
        assert failed[0] == "FAIL" and where in failed[1] and "instance profile" in failed[1], (name, failed)
    (stranger_result,) = denied["stranger"].values()
    assert stranger_result[0] == "FAIL" and "credentials" in stranger_result[1], stranger_result
    (bare_result,) = bare["bare"].values()
    assert bare_result[0] == "FAIL" and "NoCredentialsError" in bare_result[1], bare_result
    assert results["dask_text"] == ["a,b", "1,2"]

    keys = [item["Key"] for item in s3.list_objects_v2(Bucket="cf-data").get("Contents", [])]
    assert keys == ["runs/keep.csv"], "the check removes its object and touches nothing else"
