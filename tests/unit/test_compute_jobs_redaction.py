"""Credentials never reach a result's reason, details or JSON (compute_jobs.model.redact)."""

from __future__ import annotations

import json

from compute_jobs.model import FAIL, REDACTED, Result, redact, register_secret


def result(**fields: object) -> Result:
    base: dict = {"name": "x.y", "check": "x.y", "category": "correctness", "tags": [], "target": "a"}
    base.update(status=FAIL)
    base.update(fields)
    return Result(**base)  # type: ignore[arg-type]


def test_passwords_in_urls_are_redacted_and_the_rest_kept():
    text = (
        "cannot reach http://clusterforge:Zx81pq0Lm@10.0.0.1:8082/api and redis://:S3cretPw@10.0.0.1:6379/0"
    )
    out = redact(text)
    assert "Zx81pq0Lm" not in out and "S3cretPw" not in out
    assert "http://clusterforge:***@10.0.0.1:8082/api" in out and "redis://:***@10.0.0.1:6379/0" in out


def test_authorization_headers_and_password_options_are_redacted():
    out = redact(
        "Authorization: Basic Y2x1c3RlcmZvcmdlOnB3 / Bearer eyJhbGciOi.x.y / redis-cli -a hunter22 ping"
    )
    assert "Y2x1c3RlcmZvcmdlOnB3" not in out and "eyJhbGciOi" not in out and "hunter22" not in out
    assert out.count(REDACTED) == 3 and "ping" in out


def test_registered_secrets_are_redacted_wherever_they_appear():
    register_secret("r4nd0mGatewayPassw0rd")
    register_secret("abc")  # too short to redact safely: ignored
    out = redact("login failed for r4nd0mGatewayPassw0rd at abc")
    assert out == f"login failed for {REDACTED} at abc"


def test_results_are_redacted_when_built_and_when_written():
    register_secret("another-Secret-Value")
    r = result(
        reason="luigid at http://u:pw12345@h:8082/ refused",
        details={
            "password": "plain",
            "url": "amqp://celery:topsecret@b:5672//",
            "nested": ["another-Secret-Value"],
        },
        observed="redis://:topsecret2@b:6379/0",
    )
    assert "pw12345" not in r.reason
    assert r.details["password"] == REDACTED and r.details["nested"] == [REDACTED]
    written = json.dumps(r.to_dict())
    for secret in ("pw12345", "plain", "topsecret", "topsecret2", "another-Secret-Value"):
        assert secret not in written, secret
    assert "amqp://celery:***@b:5672//" in written


def test_text_without_credentials_is_unchanged():
    text = "expected 338350, observed 338349 on celery@node-2 (http://10.0.0.1:5555/api/workers)"
    assert redact(text) == text
    assert redact({"workers": ["a", "b"], "count": 2}) == {"workers": ["a", "b"], "count": 2}
