"""The declarative check model: parameters, metrics, references, results, checks and the registry.

A check is a small class in the spirit of ReFrame's hpctestlib: it declares where it applies
(capability tags, inventory groups, an engine), its typed parameters, its correctness or placement
rule with the stated tolerance, and its metrics with units. ``run`` yields results built through
the :class:`~compute_jobs.context.CheckContext` helpers, which apply the negative controls and judge
references and baselines the same way for every check.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from compute_jobs.context import CheckContext

PASS = "PASS"
FAIL = "FAIL"
ERROR = "ERROR"
SKIP = "SKIP"
STATUSES = (PASS, FAIL, ERROR, SKIP)

CATEGORIES = ("inventory", "correctness", "placement", "performance", "resilience", "security")
SCOPES = ("node", "cluster")
CONTROLS = ("wrong-answer", "missing-worker", "open-door")
BETTER = ("higher", "lower")
REFERENCE_KINDS = ("peak", "typical", "baseline")

# Target name of results produced by cluster-scope checks and by the controller-side report.
CLUSTER_TARGET = "cluster"

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
_PARAM_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class CheckError(Exception):
    """Raised inside a check when it cannot run; the result is ERROR with this message as cause."""


class SkipCheck(Exception):
    """Raised inside a check when it does not apply; the result is SKIP with this message as reason."""


class CheckTimeout(CheckError):
    """Raised by the context when a check runs past its deadline."""


class DefinitionError(Exception):
    """A check class is declared inconsistently (caught at registration, i.e. at import time)."""


class ParamError(ValueError):
    """A parameter value (from cluster.json or the command line) does not fit its declaration."""


def utc_now() -> str:
    """Current time as ISO 8601 UTC with milliseconds: 2026-11-21T10:15:00.123Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def describe_value(value: Any) -> str:
    """Render a value as it appeared in JSON, for error messages."""
    if isinstance(value, str):
        return '"' + value + '"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


_TYPE_WORDS = {int: "integer", float: "number", str: "string", bool: "boolean"}


@dataclass(frozen=True)
class Param:
    """A typed check parameter; cluster.json ``params.<check>.<name>`` or ``--param`` override it."""

    name: str
    type: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    # Tiny value that makes the check quick in unit tests and smoke runs (None: keep the default).
    smoke: Any = None

    def expectation(self) -> str:
        word = _TYPE_WORDS.get(self.type, self.type.__name__)
        if self.choices:
            return "one of " + ", ".join(describe_value(c) for c in self.choices)
        low, high = (_number(v, self.type) for v in (self.minimum, self.maximum))
        if low is not None and high is not None:
            text = f"{word} {low}..{high}"
        elif low is not None:
            text = f"{word} >= {low}"
        elif high is not None:
            text = f"{word} <= {high}"
        else:
            text = word
        return text + " or null" if self.nullable else text

    def coerce(self, value: Any, where: str) -> Any:
        """Return the value converted to the declared type, or raise ParamError naming ``where``."""
        ok = True
        if value is None:
            if self.nullable:
                return None
            ok = False
        elif isinstance(value, str) and self.type is not str:
            value, ok = _parse_text(value, self.type)
        elif self.type is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            value = float(value) if ok else value
            ok = ok and math.isfinite(value)
        elif self.type is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, self.type)
        if ok and self.minimum is not None and value < self.minimum:
            ok = False
        if ok and self.maximum is not None and value > self.maximum:
            ok = False
        if ok and self.choices is not None and value not in self.choices:
            ok = False
        if not ok:
            raise ParamError(f"{where}: expected {self.expectation()}, got {describe_value(value)}")
        return value


def _number(value: float | None, kind: type) -> str | None:
    if value is None:
        return None
    return str(int(value)) if kind is int else f"{value:g}"


def _parse_text(text: str, kind: type) -> tuple[Any, bool]:
    """Parse a command-line string into ``kind``; return (value, ok)."""
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered in ("true", "yes", "1", "on"):
                return True, True
            if lowered in ("false", "no", "0", "off"):
                return False, True
            return text, False
        if kind is int:
            return int(text, 10), True
        if kind is float:
            number = float(text)
            return number, math.isfinite(number)
    except ValueError:
        return text, False
    return text, False


@dataclass(frozen=True)
class Metric:
    """A performance figure a check reports, with its unit and which direction is better."""

    name: str
    unit: str
    better: str = "higher"
    help: str = ""


@dataclass(frozen=True)
class Reference:
    """ReFrame-style reference ``(value, lower, upper, unit)``.

    ``lower`` and ``upper`` are signed fractions of ``value``: the accepted range is
    ``[value * (1 + lower), value * (1 + upper)]``, so ``Reference(100, -0.1, 0.2, "GB/s")`` accepts
    90..120 GB/s. ``None`` leaves that side open; a reference with both sides open is only used for the
    ``ratio`` (e.g. a datasheet peak). ``kind`` keeps datasheet peaks, documented typical figures and
    site-calibrated baselines apart.
    """

    value: float
    lower: float | None
    upper: float | None
    unit: str
    kind: str = "typical"
    source: str = ""

    def bounds(self) -> tuple[float | None, float | None]:
        low = None if self.lower is None else self.value * (1.0 + self.lower)
        high = None if self.upper is None else self.value * (1.0 + self.upper)
        return low, high

    def judge(self, observed: float) -> str | None:
        """Return None when ``observed`` is within the bounds, else the reason it is not."""
        low, high = self.bounds()
        if (low is not None and observed < low) or (high is not None and observed > high):
            low_text = "-inf" if low is None else f"{low:.4g}"
            high_text = "+inf" if high is None else f"{high:.4g}"
            return (
                f"{observed:.4g} {self.unit} outside reference [{low_text}, {high_text}] {self.unit} "
                f"({self.kind} {self.value:.4g} {self.unit}, lower {_fraction(self.lower)}, "
                f"upper {_fraction(self.upper)})"
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "lower": self.lower,
            "upper": self.upper,
            "unit": self.unit,
            "kind": self.kind,
            "source": self.source,
        }


# --- redaction: no credential reaches a reason, a detail or a report --------------------------------

REDACTED = "***"
# scheme://user:password@host (Redis, AMQP, Luigi scheduler URLs): the password goes.
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s/]+)(?=@)", re.IGNORECASE
)
# HTTP authorization values and password options on command lines (redis-cli -a, --password=).
_AUTH_VALUE = re.compile(
    r"(?P<head>\b(?:Basic|Bearer)\s+|(?:^|\s)(?:-a|--pass(?:word)?)[ =]|\b(?:password|passwd|token)[=:]\s*)"
    r"(?P<secret>[^\s'\",;&]{4,})",
    re.IGNORECASE,
)
# Detail keys whose string values are secrets themselves.
_SECRET_KEY = re.compile(
    r"^(?:.*[_-])?(?:password|passwd|secret|token|authorization|fernet_key)$", re.IGNORECASE
)
# Secret values the checks read at run time (register_secret): replaced wherever they appear.
_KNOWN_SECRETS: set[str] = set()


def register_secret(value: str) -> None:
    """Redact ``value`` from every result created from now on (values shorter than 6 are ignored)."""
    if isinstance(value, str) and len(value) >= 6:
        _KNOWN_SECRETS.add(value)


def redact(value: Any) -> Any:
    """``value`` with credentials replaced by ``***``: passwords in URLs, authorization headers and
    password options, registered secrets, and the values of secret-named keys of mappings."""
    if isinstance(value, str):
        for secret in sorted(_KNOWN_SECRETS, key=len, reverse=True):
            value = value.replace(secret, REDACTED)
        value = _URL_PASSWORD.sub(lambda m: m["head"] + REDACTED, value)
        return _AUTH_VALUE.sub(lambda m: m["head"] + REDACTED, value)
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(v, str) and v and _SECRET_KEY.match(str(k)) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    return value


def _fraction(value: float | None) -> str:
    return "open" if value is None else f"{value:+.0%}"


@dataclass
class Result:
    """One result of one check on one target; ``to_dict`` gives the JSON object of result.schema.json."""

    name: str
    check: str
    category: str
    tags: list[str]
    target: str
    status: str
    reason: str = ""
    duration_s: float | None = None
    started_at: str | None = None
    rule: str | None = None
    control: str | None = None
    # correctness
    expected: Any = None
    observed: Any = None
    tolerance: float | None = None
    error: float | None = None
    # performance
    metric: str | None = None
    value: float | None = None
    unit: str | None = None
    better: str | None = None
    samples: list[float] | None = None
    median: float | None = None
    p5: float | None = None
    p95: float | None = None
    cv: float | None = None
    reference: dict[str, Any] | None = None
    ratio: float | None = None
    baseline: dict[str, Any] | None = None
    # placement
    expected_workers: list[str] | None = None
    observed_workers: list[str] | None = None
    missing: list[str] | None = None
    unexpected: list[str] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Engine errors copied into a reason can carry credentials (a URL with its password).
        self.reason = redact(self.reason)
        self.details = redact(self.details)

    # Fields always written (even when None); the rest only when they carry a value.
    ALWAYS: ClassVar[tuple[str, ...]] = (
        "name",
        "check",
        "category",
        "tags",
        "target",
        "status",
        "reason",
        "duration_s",
        "started_at",
    )
    # Fields a judged (PASS/FAIL) result of each category always carries, null where not applicable.
    BY_CATEGORY: ClassVar[dict[str, tuple[str, ...]]] = {
        "correctness": ("expected", "observed", "tolerance", "error"),
        "performance": (
            "metric",
            "value",
            "unit",
            "samples",
            "median",
            "p5",
            "p95",
            "cv",
            "reference",
            "ratio",
        ),
        "placement": ("expected_workers", "observed_workers", "missing", "unexpected"),
    }

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "result"}
        judged = self.status in (PASS, FAIL)
        required = self.BY_CATEGORY.get(self.category, ()) if judged else ()
        for item in fields(self):
            value = getattr(self, item.name)
            keep = item.name in self.ALWAYS or item.name in required or item.name == "details"
            keep = keep or value is not None
            if keep:
                out[item.name] = redact(to_jsonable(value))
        return out


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, sets, tuples and non-finite floats into strict JSON values."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((to_jsonable(v) for v in value), key=str)
    if isinstance(value, bytes):
        return value.hex()
    item = getattr(value, "item", None)
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and getattr(value, "ndim", 0):
        return to_jsonable(tolist())
    if callable(item):
        return to_jsonable(item())
    return str(value)


class Check:
    """Base class of every check; subclasses declare class attributes and implement ``run``.

    Applicability: a check applies to the target when every declared condition holds: the target is
    in one of ``groups`` (if any), ``engines.<engine>`` exists in cluster.json (if ``engine`` is set)
    and names at least one of ``engine_keys`` (if any), and ``applies`` returns None. Otherwise the
    check is SKIP with the reason.
    """

    name: ClassVar[str]
    category: ClassVar[str]
    tags: ClassVar[frozenset[str]]
    description: ClassVar[str]
    scope: ClassVar[str] = "node"
    params: ClassVar[tuple[Param, ...]] = ()
    metrics: ClassVar[tuple[Metric, ...]] = ()
    references: ClassVar[Mapping[str, Reference]] = {}
    correctness_rule: ClassVar[str | None] = None
    placement_rule: ClassVar[str | None] = None
    groups: ClassVar[tuple[str, ...]] = ()
    engine: ClassVar[str | None] = None
    # engines.<engine> must set at least one of these (how to reach the engine) for the check to apply.
    engine_keys: ClassVar[tuple[str, ...]] = ()
    timeout: ClassVar[float] = 60.0
    # Engines besides its own whose services the check uses or disturbs (the engine a drill stops);
    # resilience checks that share none run side by side (see engines_used).
    also_uses: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def engines_used(cls, cluster: Any) -> frozenset[str]:
        """The engines whose services the check relies on: its own, ``also_uses``, and what its
        engine's section of cluster.json says it runs on (``pipeline_backends``, an ``executor``
        that is an engine of the cluster: Airflow's Celery executor)."""
        own = cls.engine or cls.name.split(".")[0]
        used = {own, *cls.also_uses}
        section = cluster.engines.get(own)
        if isinstance(section, dict):
            used.update(str(v) for v in (section.get("pipeline_backends") or {}).values())
            if section.get("executor") in cluster.engines:
                used.add(str(section["executor"]))
        return frozenset(used)

    def applies(self, ctx: CheckContext) -> str | None:
        """Return a reason to SKIP, or None when the check applies to ``ctx.target``."""
        return None

    def run(self, ctx: CheckContext) -> Iterable[Result]:
        raise NotImplementedError

    @classmethod
    def all_params(cls) -> tuple[Param, ...]:
        """Declared parameters plus ``timeout`` (wall clock limit in seconds) that every check has."""
        timeout = Param("timeout", float, float(cls.timeout), "wall clock limit of the check, s", 0.1, 86400)
        return (*cls.params, timeout)

    @classmethod
    def smoke_params(cls) -> dict[str, Any]:
        """The parameters' ``smoke`` values: a quick run for unit tests (``params`` in cluster.json)."""
        return {p.name: p.smoke for p in cls.params if p.smoke is not None}

    @classmethod
    def metric(cls, name: str) -> Metric:
        for metric in cls.metrics:
            if metric.name == name:
                return metric
        raise DefinitionError(f"{cls.name}: metric {name!r} is not declared in {cls.__name__}.metrics")


class Registry:
    """Name -> check class. ``registry.register`` is used as a class decorator."""

    def __init__(self) -> None:
        self._checks: dict[str, type[Check]] = {}
        self.import_errors: dict[str, str] = {}

    def register(self, cls: type[Check]) -> type[Check]:
        validate_definition(cls)
        if cls.name in self._checks and self._checks[cls.name] is not cls:
            raise DefinitionError(f"check {cls.name!r} is registered twice ({cls.__module__}.{cls.__name__})")
        self._checks[cls.name] = cls
        return cls

    def unregister(self, name: str) -> None:
        self._checks.pop(name, None)

    def get(self, name: str) -> type[Check]:
        return self._checks[name]

    def __contains__(self, name: object) -> bool:
        return name in self._checks

    def __iter__(self):
        return iter(sorted(self._checks.values(), key=lambda c: c.name))

    def __len__(self) -> int:
        return len(self._checks)

    def tags(self) -> set[str]:
        return {tag for cls in self._checks.values() for tag in cls.tags}


def validate_definition(cls: type[Check]) -> None:
    """Reject inconsistent declarations at import time, so a broken check never reaches a node."""
    where = f"{cls.__module__}.{cls.__name__}"
    problems: list[str] = []
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        problems.append(f"name {name!r} must look like 'family.check' (lower case, dotted)")
    if getattr(cls, "category", None) not in CATEGORIES:
        problems.append(f"category must be one of {', '.join(CATEGORIES)}")
    tags = getattr(cls, "tags", None)
    if not isinstance(tags, frozenset | set) or not tags or not all(isinstance(t, str) for t in tags):
        problems.append("tags must be a non-empty set of strings")
    if cls.scope not in SCOPES:
        problems.append(f"scope must be one of {', '.join(SCOPES)}")
    if not isinstance(getattr(cls, "description", None), str) or not cls.description.strip():
        problems.append("description must be a one-line string")
    elif "\n" in cls.description:
        problems.append("description must fit on one line")
    if not isinstance(cls.timeout, int | float) or cls.timeout <= 0:
        problems.append("timeout must be a positive number of seconds")
    seen: set[str] = set()
    for param in cls.params:
        if not _PARAM_RE.match(param.name) or param.name in seen or param.name == "timeout":
            problems.append(f"parameter name {param.name!r} is invalid, duplicated or reserved")
        seen.add(param.name)
        if param.default is not None or not param.nullable:
            try:
                param.coerce(param.default, f"{name}.{param.name} default")
            except ParamError as exc:
                problems.append(str(exc))
        if param.smoke is not None:
            try:
                param.coerce(param.smoke, f"{name}.{param.name} smoke")
            except ParamError as exc:
                problems.append(str(exc))
    metric_names = {m.name for m in cls.metrics}
    for metric in cls.metrics:
        if metric.better not in BETTER:
            problems.append(f"metric {metric.name}: better must be one of {', '.join(BETTER)}")
    for key, ref in cls.references.items():
        if key not in metric_names:
            problems.append(f"reference for undeclared metric {key!r}")
        elif ref.unit != cls.metric(key).unit:
            problems.append(f"reference unit {ref.unit!r} differs from metric unit {cls.metric(key).unit!r}")
        if ref.kind not in REFERENCE_KINDS:
            problems.append(f"reference kind must be one of {', '.join(REFERENCE_KINDS)}")
    if problems:
        raise DefinitionError(f"{where}: " + "; ".join(problems))


def param_table(cls: type[Check]) -> list[dict[str, Any]]:
    """Parameters of a check as plain dicts, for ``list --verbose`` and the docs."""
    return [
        {
            "name": p.name,
            "type": _TYPE_WORDS.get(p.type, p.type.__name__),
            "default": p.default,
            "help": p.help,
        }
        for p in cls.all_params()
    ]


registry = Registry()
register: Callable[[type[Check]], type[Check]] = registry.register

# Sessions that checks of one engine share across checks and that hold cluster resources (the
# shared SparkSession holds every Spark core): engine -> a function that releases them. The runner
# calls the others' before a check of another engine runs one by one, so that an Airflow or Luigi
# pipeline that starts a Spark application of its own is not left waiting for cores.
SHARED_SESSIONS: dict[str, Callable[[], None]] = {}


def register_shared_session(engine: str, release: Callable[[], None]) -> None:
    SHARED_SESSIONS[engine] = release


def release_shared_sessions(keep: str | None = None, only: Collection[str] | None = None) -> None:
    """Release every engine's shared sessions (or ONLY those of these engines) but KEEP's."""
    for engine, release in SHARED_SESSIONS.items():
        if engine != keep and (only is None or engine in only):
            release()


# --- result sets and summaries (standard library: the controller's report uses them) -----------


@dataclass(frozen=True)
class SetVerdict:
    expected: list[str]
    observed: list[str]
    missing: list[str]
    unexpected: list[str]

    @property
    def passed(self) -> bool:
        return not self.missing and not self.unexpected

    def reason(self) -> str:
        parts = []
        if self.missing:
            parts.append("missing: " + ", ".join(self.missing))
        if self.unexpected:
            parts.append("unexpected: " + ", ".join(self.unexpected))
        return "; ".join(parts)


def judge_sets(expected: Collection[Any], observed: Collection[Any]) -> SetVerdict:
    """Expected vs observed members; both directions are reported (who is missing, who is extra)."""
    exp = {str(x) for x in expected}
    obs = {str(x) for x in observed}
    return SetVerdict(sorted(exp), sorted(obs), sorted(exp - obs), sorted(obs - exp))


def count_statuses(results: Iterable[Result | dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for result in results:
        status = result["status"] if isinstance(result, dict) else result.status
        counts[status] = counts.get(status, 0) + 1
    return counts


def build_summary(
    results: Iterable[Result | dict[str, Any]],
    *,
    run_id: str | None,
    git_sha: str | None,
    inventory_hash: str | None,
    cluster_name: str | None,
    started_at: str | None,
    finished_at: str | None,
    versions: dict[str, dict[str, str]],
) -> dict[str, Any]:
    return {
        "type": "summary",
        "run_id": run_id,
        "git_sha": git_sha,
        "inventory_hash": inventory_hash,
        "cluster_name": cluster_name,
        "started_at": started_at,
        "finished_at": finished_at,
        "counts": count_statuses(results),
        "versions": versions,
    }
