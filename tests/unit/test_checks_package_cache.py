"""package_cache.pip against a fake Python package cache (its HTTPS gateway replaced at the FETCH seam)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from checkrun import run_checks

from compute_jobs.checks import load_all
from compute_jobs.checks import package_cache as pc
from compute_jobs.model import ERROR, FAIL, PASS

load_all()

INDEX = "https://10.0.0.11:3143/simple/"
AUTH = "Basic " + base64.b64encode(b"clusterforge:s3cret").decode()
WHEEL = b"PK\x03\x04 a wheel of typing_extensions 4.16.0"
NAME = "typing_extensions-4.16.0-py3-none-any.whl"
CHECK = "package_cache.pip"


class FakeCache:
    """A cache that rewrote the page's links to itself and keeps each file after its first answer."""

    def __init__(self) -> None:
        self.files_host = "https://10.0.0.11:3143/files/"
        self.body = WHEEL
        self.keeps = True
        self.held: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []

    def page(self) -> bytes:
        digest = hashlib.sha256(WHEEL).hexdigest()
        links = [
            f'<a href="{self.files_host}aa/bb/typing_extensions-4.15.0-py3-none-any.whl#sha256={"0" * 64}">'
            "typing_extensions-4.15.0-py3-none-any.whl</a>",
            f'<a href="{self.files_host}cc/dd/typing_extensions-4.16.0.tar.gz#sha256={"1" * 64}">'
            "typing_extensions-4.16.0.tar.gz</a>",
            f'<a href="{self.files_host}ee/ff/{NAME}#sha256={digest}" '
            f'data-requires-python="&gt;=3.9">{NAME}</a>',
        ]
        return ("<!DOCTYPE html><html><body>" + "<br/>".join(links) + "</body></html>").encode()

    def fetch(self, url: str, headers: dict[str, str], ca_file: str, timeout: float) -> pc.Answer:
        self.requests.append((url, headers.get("Authorization")))
        assert ca_file == "/etc/clusterforge/tls/ca.crt"
        if headers.get("Authorization") != AUTH:
            return pc.Answer(401, {}, b"401 Authorization Required")
        if url == INDEX + "typing-extensions/":
            return pc.Answer(200, {"x-cache-status": "EXPIRED"}, self.page())
        if url.endswith(NAME):
            status = "HIT" if url in self.held else "MISS"
            if self.keeps:
                self.held.add(url)
            return pc.Answer(200, {"x-cache-status": status}, self.body)
        return pc.Answer(404, {}, b"not found")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCache:
    cache = FakeCache()
    monkeypatch.setattr(pc, "FETCH", cache.fetch)
    return cache


@pytest.fixture
def cluster(cj_cluster, tmp_path):
    credentials = tmp_path / "pip.credentials"
    credentials.write_text("clusterforge:s3cret\n")

    def make(pins: dict[str, str] | None = None, **engine: Any) -> Any:
        section = {
            "index_url": INDEX,
            "ca_file": "/etc/clusterforge/tls/ca.crt",
            "credentials_file": str(credentials),
            **engine,
        }
        pinned = {"typing_extensions": "4.16.0", "numpy": "2.2.6"} if pins is None else pins
        return cj_cluster(engines={"package_cache": section}, pinned_libraries=pinned)

    return make


def statuses(results: dict[str, Any]) -> dict[str, str]:
    return {name: r.status for name, r in results.items()}


def test_a_cache_that_rewrites_serves_and_keeps_passes(fake, cluster):
    results = run_checks(cluster(), [CHECK])
    assert statuses(results) == {
        "package_cache.pip.links": PASS,
        "package_cache.pip.file": PASS,
        "package_cache.pip.cached": PASS,
    }
    assert results["package_cache.pip.links"].observed == 3
    assert results["package_cache.pip.cached"].details["first"] == "MISS"
    # The pinned version's wheel, twice, and never without the password.
    assert [u.rsplit("/", 1)[-1] for u, _ in fake.requests] == ["", NAME, NAME]
    assert {auth for _, auth in fake.requests} == {AUTH}


def test_a_link_left_on_the_index_s_file_host_fails(fake, cluster):
    original = fake.page
    fake.page = lambda: original().replace(  # type: ignore[method-assign]
        b"https://10.0.0.11:3143/files/aa/", b"https://files.pythonhosted.org/aa/", 1
    )
    results = run_checks(cluster(), [CHECK])
    links = results["package_cache.pip.links"]
    assert links.status == FAIL
    assert (links.expected, links.observed) == (3, 2)
    assert links.details["other_hosts"] == ["files.pythonhosted.org"]


def test_an_altered_file_fails(fake, cluster):
    fake.body = WHEEL + b"tampered"
    results = run_checks(cluster(), [CHECK])
    assert results["package_cache.pip.file"].status == FAIL
    assert results["package_cache.pip.links"].status == PASS


def test_a_cache_that_does_not_keep_files_fails(fake, cluster):
    fake.keeps = False
    results = run_checks(cluster(), [CHECK])
    cached = results["package_cache.pip.cached"]
    assert cached.status == FAIL
    assert cached.observed == "MISS"


def test_a_package_the_nodes_did_not_pin_is_an_error_naming_the_param(fake, cluster):
    results = run_checks(cluster(pins={"numpy": "2.2.6"}), [CHECK])
    (result,) = results.values()
    assert result.status == ERROR
    assert "typing_extensions is not in pinned_libraries" in result.reason
    assert "param package" in result.reason


def test_a_missing_credentials_file_is_an_error_naming_the_playbook(fake, cluster, tmp_path):
    results = run_checks(cluster(credentials_file=str(tmp_path / "none")), [CHECK])
    (result,) = results.values()
    assert result.status == ERROR
    assert "playbooks/package_cache.yml" in result.reason


def test_the_wrong_answer_control_fails_every_result(fake, cluster):
    results = run_checks(cluster(), [CHECK], inject="wrong-answer")
    assert set(statuses(results).values()) == {FAIL}
    assert all(r.control == "wrong-answer" for r in results.values())


def test_the_pure_wheel_of_the_pinned_version_is_chosen():
    links = pc.page_links(FakeCache().page().decode())
    href, name = pc.pure_wheel(links, "typing-extensions", "4.16.0") or ("", "")
    assert name == NAME and href.split("#")[0].endswith(NAME)
    assert pc.pure_wheel(links, "typing_extensions", "4.17.0") is None
