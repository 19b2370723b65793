"""Package cache check: the cluster's Python package cache serves the index as the nodes' pip reads it.

``package_cache.pip`` runs once, from the head node, where cluster.json declares
``engines.package_cache`` (role package_cache with package_cache_enabled and package_cache_pip_enabled).
Through the cache's HTTPS gateway, verified against the cluster CA, with the credential the role
gave the verification account, it reads the index page (PEP 503) of one distribution the nodes
installed (param ``package``, at its version in ``pinned_libraries``) and proves:

- every file link of the page points at the cache itself (``https://<cache>/files/...``), none at
  the index's own file host: a node's pip fetches every file through the cache;
- the wheel of the pinned version comes back through the cache with the sha256 the page names
  (the cache serves the index's file unaltered), twice;
- the second answer came from the cache's disk (``X-Cache-Status: HIT``): each file crosses the
  network from the index once, however many nodes ask for it.

That a request without the password is refused is ``security.anonymous``'s (door ``pip-cache``).

``engines.package_cache`` in cluster.json::

    {
      "index_url": "https://10.0.0.11:3143/simple/",
      "ca_file": "/etc/clusterforge/tls/ca.crt",
      "credentials_file": "/etc/clusterforge/package_cache/pip.credentials"   # user:password, 0640
    }
"""

from __future__ import annotations

import base64
import hashlib
import html.parser
import re
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from compute_jobs.context import CheckContext
from compute_jobs.model import Check, CheckError, Param, Result, register
from compute_jobs.transport import ca_context, read_user_password, urllib_exchange

PLAYBOOK = "playbooks/package_cache.yml"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


def https_fetch(url: str, headers: dict[str, str], ca_file: str, timeout: float) -> Answer:
    """GET over HTTPS trusting only ``ca_file``; an HTTP error status is an answer."""
    return Answer(*urllib_exchange("GET", url, headers, None, timeout, ca_context(ca_file)))


# The HTTP boundary (the unit tests give one of a loopback cache): (url, headers, ca_file, timeout).
FETCH: Callable[[str, dict[str, str], str, float], Answer] = https_fetch


class _Links(html.parser.HTMLParser):
    """The anchors of a PEP 503 page: (href, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href") or ""
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None


def page_links(page: str) -> list[tuple[str, str]]:
    parser = _Links()
    parser.feed(page)
    return parser.links


def normalize(name: str) -> str:
    """PEP 503 name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pure_wheel(links: list[tuple[str, str]], package: str, version: str) -> tuple[str, str] | None:
    """(href, filename) of the pinned version's pure-Python wheel (``py3-none-any``), if the page has one."""
    stem = f"{normalize(package).replace('-', '_')}-{version}-"
    for href, text in links:
        name = text or urllib.parse.urlsplit(href).path.rsplit("/", 1)[-1]
        if name.lower().startswith(stem.lower()) and name.endswith(
            ("-py3-none-any.whl", "-py2.py3-none-any.whl")
        ):
            return href, name
    return None


@register
class PackageCachePip(Check):
    name = "package_cache.pip"
    category = "correctness"
    scope = "cluster"
    engine = "package_cache"
    tags = frozenset({"package_cache"})
    description = (
        "The Python package cache serves the index with its file links rewritten to itself, "
        "the files unaltered and kept"
    )
    params = (
        Param("package", str, "typing_extensions", "a pinned pure-Python distribution the nodes installed"),
        Param(
            "timeout_s",
            float,
            60.0,
            "s for each request (a file the cache does not hold yet comes from the index)",
            1,
            600,
        ),
    )
    correctness_rule = (
        "every file link of the index page points at the cache; the pinned wheel's sha256 through the "
        "cache == the page's, twice; the second answer is a cache HIT"
    )
    timeout = 180.0

    def run(self, ctx: CheckContext) -> Iterator[Result]:
        p = ctx.params
        section = ctx.cluster.engines["package_cache"]
        for key in ("index_url", "ca_file", "credentials_file"):
            if not section.get(key):
                raise CheckError(f"engines.package_cache.{key} is missing: converge {PLAYBOOK}")
        index_url = str(section["index_url"])
        if not index_url.endswith("/"):
            index_url += "/"
        ca_file = str(section["ca_file"])
        user, password = read_user_password(str(section["credentials_file"]), PLAYBOOK)
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
        pins = {normalize(k): v for k, v in ctx.cluster.pinned_libraries.items()}
        version = pins.get(normalize(p.package))
        if not version:
            raise CheckError(
                f"{p.package} is not in pinned_libraries of cluster.json: "
                "name a distribution the nodes installed (param package)"
            )
        page_url = urllib.parse.urljoin(index_url, normalize(p.package) + "/")
        page = FETCH(page_url, headers, ca_file, ctx.bounded(p.timeout_s))
        if page.status != 200:
            raise CheckError(f"GET {page_url}: HTTP {page.status} {page.body[:200]!r}")
        links = page_links(page.body.decode("utf-8", "replace"))
        cache = urllib.parse.urlsplit(index_url)
        files_prefix = f"{cache.scheme}://{cache.netloc}/files/"
        if not links:
            raise CheckError(f"{page_url} lists no files")
        elsewhere = sorted(
            {urllib.parse.urlsplit(h).netloc for h, _ in links if not h.startswith(files_prefix)}
        )
        yield ctx.compare(
            len(links),
            sum(1 for h, _ in links if h.startswith(files_prefix)),
            name="package_cache.pip.links",
            rule=f"every file link of the index page starts with {files_prefix}",
            details={"page": page_url, "links": len(links), "other_hosts": elsewhere},
        )
        wheel = pure_wheel(links, p.package, version)
        if wheel is None:
            raise CheckError(f"{page_url} lists no py3-none-any wheel of {p.package} {version}")
        href, filename = wheel
        digest = urllib.parse.urlsplit(href).fragment.partition("sha256=")[2]
        if not digest:
            raise CheckError(f"{page_url}: the link of {filename} names no sha256")
        file_url = urllib.parse.urldefrag(href).url
        answers = [FETCH(file_url, headers, ca_file, ctx.bounded(p.timeout_s)) for _ in range(2)]
        for number, answer in enumerate(answers, start=1):
            if answer.status != 200:
                raise CheckError(f"GET {file_url} ({number}): HTTP {answer.status}")
        yield ctx.compare(
            [digest, digest],
            [hashlib.sha256(a.body).hexdigest() for a in answers],
            name="package_cache.pip.file",
            rule="the wheel through the cache, twice, has the sha256 of the index page's link",
            details={"file": filename, "bytes": len(answers[0].body)},
        )
        statuses = [a.headers.get("x-cache-status", "") for a in answers]
        yield ctx.compare(
            "HIT",
            statuses[1] or "no X-Cache-Status",
            name="package_cache.pip.cached",
            rule="the second request for one file is answered from the cache's disk (X-Cache-Status: HIT)",
            details={"file": filename, "first": statuses[0] or None},
        )
