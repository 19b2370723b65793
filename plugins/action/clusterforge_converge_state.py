# Copyright: clusterforge maintainers
# Apache-2.0
"""Controller side of clusterforge_converge_state: the digest of a tier's inputs, and when to skip."""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible.utils.vars import load_extra_vars

display = Display()

ROOT = Path(__file__).resolve().parents[2]
# What a converge is made of on the controller: the tiers, the roles and everything they deploy.
PROJECT = (
    "ansible.cfg",
    "site.yml",
    "playbooks",
    "roles",
    "plugins",
    "compute_jobs",
    "clusterforge_pipeline",
    "dags",
    "notebooks",
    "requirements",
)
# What a tier's inputs take of the project (tier_files): the files every tier reads (the
# configuration, site.yml, the playbooks site.yml imports before the tier's own and the folders of
# playbooks/ that those or the tier's own name, such as tier_state/), the plugins that the tier's
# files name (a module or action plugin by its name, a filter or test plugin by the names it
# declares; no callback or inventory plugin), the roles its
# playbook applies and the roles those apply (roles lists, meta dependencies, include_role and
# import_role, a sibling's files through role_path/../), and a directory of DEPLOYED only where one
# of those names it (role_path/../../compute_jobs). A role's molecule scenarios and its README are
# no converge's input. A tier whose roles cannot be told (no playbooks/<tier>.yml, a templated role
# name, a role outside roles/, a file that is not plain YAML) takes every file, as before; one that
# site.yml does not import takes every playbook.
DEPLOYED = ("compute_jobs", "clusterforge_pipeline", "dags", "notebooks")
NOT_READ_BY_A_CONVERGE = ("molecule",)
# Plugins that change what a run shows or which hosts and variables it gets, not what it does on a
# node: the progress callback; an inventory plugin (what it yields, the hosts and the variables, is
# digested as such).
PLUGINS_NO_INPUT = ("callback", "inventory")
ROLE_KEYS = ("include_role", "import_role")
# Where a role's YAML may apply other roles, and the files that may reach a sibling's through role_path.
ROLE_DIRS = ("tasks", "handlers", "meta")
TEXT_SUFFIXES = (".yml", ".yaml", ".j2", ".py", ".cfg", ".conf", ".txt", ".json", ".sh")
SIBLING = re.compile(r"role_path\s*}}/\.\./([A-Za-z0-9_]+)")
# The names a file may use (a variable is a tier's input where one of its files names it).
WORD = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
# A file that reaches variables by a computed name: every inventory variable is that tier's input.
DYNAMIC_NAMES = re.compile(
    rb"(?<![A-Za-z0-9_])(?:lookup|query|q)\(\s*['\"](?:ansible\.builtin\.)?var(?:s|names)['\"]"
    rb"|(?<![A-Za-z0-9_.])vars\s*\["
)
# Inventory variables Ansible itself reads (connection, privilege, interpreter): every tier's input.
EVERY_TIER_PREFIXES = ("ansible_", "mitogen_")
# Skipping these tags still runs every task of a tier (no tier task carries them): the fast path
# stays allowed. molecule skips its own on every run (and one more in its idempotence run).
NEUTRAL_SKIP_TAGS = {"verify", "molecule-notest", "notest", "molecule-idempotence-notest"}
# Written by the verification tier (its own token), not read by any converging tier.
SECRETS_NOT_INPUTS = {"verify"}
# What a tier's inputs are made of, as a check names them when they changed (tier_digests).
PART_KINDS = ("files", "variables", "inventory files", "hosts")
# Playbooks site.yml runs before the tiers that only check (plays on the controller, assert and fail
# tasks: tests/unit/test_converge_state.py holds them to it): they stop a run or change nothing, so no
# tier's result depends on them and they are no tier's input (nor what they name: the preflight's
# port plan reads every service's port, which would make a port edit every tier's).
GATES = {"preflight.yml"}
# Extra vars that choose how to converge, not what: they are not inputs.
NOT_INPUTS = {"cluster_fast_converge"}
# What the roles write on a node, as far as a tier's state goes (README "Re-converging").
DEFAULT_PATHS = [
    "/etc/clusterforge",
    "/etc/systemd/system",
    "/etc/systemd/timesyncd.conf.d",
    "/etc/sudoers.d",
    "/etc/ansible/facts.d",
    "/etc/hosts",
    "/etc/hosts.allow",
    "/etc/hosts.deny",
    "/etc/ssh",
    "/etc/apt/sources.list.d",
    "/etc/apt/apt.conf.d",
    "/etc/apt/preferences.d",
    "/etc/apt-cacher-ng",
    "/etc/default",
    "/etc/fstab",
    "/etc/exports",
    "/etc/exports.d",
    "/etc/nfs.conf.d",
    "/etc/nginx",
    "/etc/openmpi",
    "/etc/postgresql",
    "/etc/profile.d",
    "/etc/prometheus",
    "/etc/rabbitmq",
    "/etc/redis",
    "/usr/local/share/ca-certificates",
    "/opt/clusterforge/lib",
    "/opt/clusterforge/pipeline",
    "/opt/clusterforge/airflow-dags",
]
DEFAULT_VENVS = [
    "/opt/clusterforge/*/lib/python3*/site-packages",
    "/opt/clusterforge/*/*/lib/python3*/site-packages",
]
# Units whose being active counts: the engines' and the services they run on.
DEFAULT_UNITS = [
    "clusterforge-",
    "dask-",
    "spark-",
    "celery-",
    "airflow-",
    "luigid",
    "jupyterhub",
    "nginx",
    "redis",
    "postgresql",
    "prometheus",
    "rabbitmq",
    "ssh",
    "nfs-",
    "apt-cacher-ng",
]
# Not part of what the tiers left: the verification tier's own unit (its network test server) and
# the byte code Python writes next to the deployed sources when they run.
DEFAULT_IGNORE = [
    "/etc/systemd/system/clusterforge-verify-*",
    "clusterforge-verify-*",
    "*/__pycache__",
    "*/__pycache__/*",
    "*.pyc",
]


_MEMO: dict[tuple[Any, ...], Any] | None = None


@contextmanager
def one_reading() -> Iterator[None]:
    """Within it, the project's and the inventory's files are walked and read once: one action's
    digests of every tier (a snapshot takes twelve) share them. Outside it, every call reads
    afresh (a test edits files between calls)."""
    global _MEMO
    outer, _MEMO = _MEMO, ({} if _MEMO is None else _MEMO)
    try:
        yield
    finally:
        _MEMO = outer


def _remembered(function: Callable[..., Any]) -> Callable[..., Any]:
    """FUNCTION's result remembered by its arguments within one_reading(). Its callers must not
    change what it returns."""

    @functools.wraps(function)
    def wrapper(*args: Any) -> Any:
        if _MEMO is None:
            return function(*args)
        key = (function.__name__, *args)
        if key not in _MEMO:
            _MEMO[key] = function(*args)
        return _MEMO[key]

    return wrapper


@_remembered
def _files(path: Path) -> list[Path]:
    """The regular files below PATH (a file: itself), in a stable order, without byte code and
    hidden directories."""
    if path.is_file():
        return [path]
    found = []
    for directory, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        found.extend(Path(directory, name) for name in sorted(files) if not name.endswith((".pyc", ".retry")))
    return found


def _role_refs(data: Any) -> list[str]:
    """The role names a playbook or a role's YAML applies: roles lists, meta dependencies,
    include_role and import_role (FQCN or short)."""
    found: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if key in ("roles", "dependencies") and isinstance(value, list):
                for item in value:
                    name = item.get("role", item.get("name")) if isinstance(item, dict) else item
                    found.append(name if isinstance(name, str) else "{{ not a name }}")
            if str(key).rsplit(".", 1)[-1] in ROLE_KEYS and isinstance(value, dict):
                name = value.get("name")
                found.append(name if isinstance(name, str) else "{{ not a name }}")
            found.extend(_role_refs(value))
    elif isinstance(data, list):
        for item in data:
            found.extend(_role_refs(item))
    return found


_REFS: dict[tuple[str, int, int], list[str]] = {}


def _refs_of(full: Path, yaml_refs: bool) -> list[str]:
    """The roles a file names (its YAML's role references when YAML_REFS, a sibling's files through
    role_path/../), remembered for this process while the file stays the same."""
    import yaml  # ansible-core's own dependency

    status = full.stat()
    key = (f"{full}\0{yaml_refs}", status.st_mtime_ns, status.st_size)
    if key not in _REFS:
        text = full.read_text(errors="replace")
        refs = SIBLING.findall(text)
        if yaml_refs:
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            refs += _role_refs(yaml.load(text, Loader=loader))
        _REFS[key] = refs
    return _REFS[key]


@_remembered
def tier_roles(tier: str, root: Path = ROOT) -> set[str] | None:
    """The roles TIER's playbook applies, with those they apply in turn; None when that cannot be
    told (README "Re-converging": the tier then takes every role)."""
    import yaml  # ansible-core's own dependency

    playbook = root / "playbooks" / f"{tier}.yml"
    if not tier or not playbook.is_file():
        return None
    try:
        todo = list(_refs_of(playbook, True))
        roles: set[str] = set()
        while todo:
            name = todo.pop()
            if name in roles:
                continue
            if not re.fullmatch(r"[A-Za-z0-9_]+", name) or not (root / "roles" / name).is_dir():
                return None
            roles.add(name)
            prefix = len(str(root / "roles" / name)) + 1
            for full in _files(root / "roles" / name):
                top = str(full)[prefix:].split(os.sep, 1)[0]
                if top in NOT_READ_BY_A_CONVERGE or full.suffix not in TEXT_SUFFIXES:
                    continue
                todo.extend(_refs_of(full, full.suffix in (".yml", ".yaml") and top in ROLE_DIRS))
    except (OSError, yaml.YAMLError):
        return None
    return roles


@_remembered
def playbooks_before(tier: str, root: Path = ROOT) -> set[str] | None:
    """The names of the playbooks site.yml imports before TIER's own (preflight.yml, cloud_up.yml:
    what runs before a tier may set what it reads); None when site.yml cannot tell (it does not
    import playbooks/<tier>.yml as such, or is not plain YAML): the tier then takes every playbook."""
    try:
        plays = _yaml(root / "site.yml")
    except ValueError:
        return None
    names: list[str] = []
    for play in plays if isinstance(plays, list) else []:
        path = None
        if isinstance(play, dict):
            path = play.get("ansible.builtin.import_playbook", play.get("import_playbook"))
        if not isinstance(path, str) or not path.startswith("playbooks/") or "{" in path:
            return None
        if path == f"playbooks/{tier}.yml":
            return set(names)
        names.append(path.removeprefix("playbooks/"))
    return None


_SCANS: dict[tuple[str, int, int], tuple[str, frozenset[str], frozenset[str] | None]] = {}


def _scan(full: Path) -> tuple[str, frozenset[str], frozenset[str] | None]:
    """A file's content digest, which DEPLOYED directories it names (../compute_jobs) and the
    names it uses (None: it reaches variables by computed names), remembered for this process
    while the file stays the same."""
    try:
        status = full.stat()
        key = (str(full), status.st_mtime_ns, status.st_size)
        if key not in _SCANS:
            content = full.read_bytes()
            named = frozenset(name for name in DEPLOYED if f"../{name}".encode() in content)
            words = (
                None
                if DYNAMIC_NAMES.search(content)
                else frozenset(word.decode() for word in WORD.findall(content))
            )
            _SCANS[key] = (hashlib.sha256(content).hexdigest(), named, words)
        return _SCANS[key]
    except OSError as exc:
        return f"unreadable {exc.errno}", frozenset(), None


@_remembered
def tier_names_of(root: Path = ROOT) -> list[str]:
    """The project's tiers: the playbooks that import tier_state with their tier's name."""
    return sorted(
        path.stem
        for path in (root / "playbooks").glob("*.yml")
        if "tier_state_tier:" in path.read_text(errors="replace")
    )


@_remembered
def tier_files(tier: str | None, root: Path = ROOT) -> list[tuple[str, Path]]:
    """The project's files TIER's inputs are made of (README "Re-converging"): each one's path in
    the project and its full path, in a stable order."""
    prefix = len(str(root)) + 1
    every = [(str(full)[prefix:], full) for name in PROJECT for full in _files(root / name)]
    roles = tier_roles(tier, root) if tier else None
    if roles is None:
        return every
    tiers = set(tier_names_of(root))
    before = playbooks_before(tier, root)
    kept: list[tuple[str, Path]] = []
    named: set[str] = set()
    folders: dict[str, list[tuple[str, Path]]] = {}  # playbooks/<folder>/...: held until named
    plugins: list[tuple[str, Path]] = []  # plugins/<type>/<file>: held until named
    for relative, full in every:
        parts = relative.split(os.sep)
        if parts[0] == "plugins":
            if len(parts) > 2 and parts[1] in PLUGINS_NO_INPUT:
                continue
            plugins.append((relative, full))
            continue
        if parts[0] == "playbooks" and len(parts) > 2 and before is not None:
            folders.setdefault(parts[1], []).append((relative, full))
            continue
        other = parts[0] == "playbooks" and len(parts) == 2 and full.stem not in tiers
        if other and before is not None and (full.name not in before or full.name in GATES):
            continue  # run after the tier (verify.yml), not by site.yml (scale.yml), or a gate
        if parts[0] == "roles":
            if len(parts) < 3 or parts[1] not in roles or parts[2] in NOT_READ_BY_A_CONVERGE:
                continue
            if len(parts) == 3 and full.suffix == ".md":
                continue
            named |= _scan(full)[1]
        elif parts[0] == "playbooks" and len(parts) == 2 and full.stem in tiers:
            if full.stem != tier:
                continue
            named |= _scan(full)[1]
        elif parts[0] in DEPLOYED:
            continue
        kept.append((relative, full))
    kept.extend((relative, full) for relative, full in every if relative.split(os.sep)[0] in named)
    # A folder of playbooks/ is the tier's only where a playbook it runs names it (tier_state/ from
    # each tier's playbook; drain_probe/ from upgrade.yml and scale.yml, which site.yml does not run).
    readers = [full for relative, full in kept if relative.split(os.sep)[0] in ("site.yml", "playbooks")]
    while readers:
        text = b"".join(_read(full) for full in readers)
        readers = []
        for folder in [folder for folder in folders if f"{folder}/".encode() in text]:
            kept.extend(folders[folder])
            readers.extend(full for _, full in folders.pop(folder))
    kept.extend(_plugins_named(plugins, [full for _, full in kept]))
    return sorted(kept)


def _plugin_names(relative: str, full: Path) -> frozenset[str] | None:
    """The names a playbook or role calls a plugin file by: its module, action or lookup name (the
    file's name), and for filter and test plugins the keys of the mapping its filters() or tests()
    returns (None where that is not a literal mapping: every tier takes the file)."""
    kind = relative.split(os.sep)[1]
    if kind not in ("filter", "test"):
        return frozenset({full.stem})
    try:
        tree = ast.parse(_read(full))
    except (SyntaxError, ValueError):
        return None
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == f"{kind}s":
            returned = [n.value for n in ast.walk(node) if isinstance(n, ast.Return)]
            if len(returned) != 1 or not isinstance(returned[0], ast.Dict):
                return None
            for key in returned[0].keys:
                if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                    return None
                names.add(key.value)
    return frozenset(names) if names else None


def _plugins_named(plugins: list[tuple[str, Path]], readers: list[Path]) -> list[tuple[str, Path]]:
    """Of the project's plugins, those that READERS (a tier's files) name, and those that the named
    ones name in turn (an action plugin that loads its module); every one where a reader reaches
    names by computing them, or where a plugin cannot be read."""
    used: set[str] = set()
    for full in readers:
        words = _scan(full)[2]
        if words is None:
            return plugins
        used |= words
    names = {plugin: _plugin_names(*plugin) for plugin in plugins}
    kept: list[tuple[str, Path]] = []
    waiting = list(plugins)
    while True:
        found = [plugin for plugin in waiting if names[plugin] is None or names[plugin] & used]
        if not found:
            return kept
        kept.extend(found)
        waiting = [plugin for plugin in waiting if plugin not in found]
        for _, full in found:
            words = _scan(full)[2]
            if words is None:
                return kept + waiting
            used |= words


def _read(full: Path) -> bytes:
    try:
        return full.read_bytes()
    except OSError:
        return b""


@_remembered
def _yaml(full: Path) -> Any:
    """FULL's YAML (plain YAML only: a vault, a tag or a syntax error raises ValueError)."""
    import yaml  # ansible-core's own dependency

    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        return yaml.load(full.read_text(errors="strict"), Loader=loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(str(exc)) from exc


def _static_vars(data: Any, where: str, found: list[tuple[str, str, Any]]) -> None:
    """The variables of a YAML inventory's groups and hosts, each with where it is set; ValueError
    for anything but groups of hosts, vars and children (an inventory plugin's configuration)."""
    if not isinstance(data, dict):
        raise ValueError("not a YAML inventory")
    for group, body in data.items():
        if body is None:
            continue
        if not isinstance(body, dict) or set(body) - {"hosts", "vars", "children"}:
            raise ValueError("not a YAML inventory")
        for name, value in (body.get("vars") or {}).items():
            found.append((f"{where}:{group}", str(name), value))
        for host, host_vars in (body.get("hosts") or {}).items():
            if host_vars is not None and not isinstance(host_vars, dict):
                raise ValueError("not a YAML inventory")
            for name, value in (host_vars or {}).items():
                found.append((f"{where}:{host}", str(name), value))
        _static_vars(body.get("children") or {}, where, found)


@_remembered
def inventory_vars(sources: tuple[str, ...]) -> tuple[list[tuple[str, str, Any]], list[tuple[str, bytes]]]:
    """What the inventory SOURCES set: each variable of a YAML inventory or of a group_vars or
    host_vars file (where, name, value), and the files that cannot be read as such (an INI
    inventory, an inventory plugin's configuration, a vault) whole (where, content)."""
    variables: list[tuple[str, str, Any]] = []
    whole: list[tuple[str, bytes]] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            files = [
                (full, bool({"group_vars", "host_vars"} & set(full.relative_to(path).parts[:-1])))
                for full in _files(path)
            ]
        elif path.is_file():  # group_vars and host_vars beside an inventory file
            files = [(path, False)] + [
                (full, True)
                for sibling in ("group_vars", "host_vars")
                for full in _files(path.parent / sibling)
            ]
        else:
            whole.append((f"{path} absent", b""))
            continue
        for full, holds_variables in files:
            try:
                if holds_variables:
                    data = _yaml(full)
                    if data is not None and not isinstance(data, dict):
                        raise ValueError("not a mapping of variables")
                    variables.extend((str(full), str(name), value) for name, value in (data or {}).items())
                else:
                    _static_vars(_yaml(full), str(full), variables)
            except ValueError:
                try:
                    whole.append((str(full), full.read_bytes()))
                except OSError as exc:
                    whole.append((str(full), f"unreadable {exc.errno}".encode()))
    return variables, whole


@_remembered
def tier_names(tier: str | None, root: Path = ROOT) -> frozenset[str] | None:
    """The names TIER's project files use; None when every variable is its input (its roles
    cannot be told, or a file of it reaches variables by computed names)."""
    if not tier or tier_roles(tier, root) is None:
        return None
    names: set[str] = set()
    for _, full in tier_files(tier, root):
        words = _scan(full)[2]
        if words is None:
            return None
        names |= words
    return frozenset(names)


def tier_inputs(variables: list[tuple[str, str, Any]], names: frozenset[str] | None) -> set[str]:
    """The variables of VARIABLES that are a tier's inputs: those its files name (NAMES; None: all),
    Ansible's own, and every variable the value of one of those names (its templates)."""
    defined = {name for _, name, _ in variables}
    if names is None:
        return defined
    inputs = {name for name in defined if name in names or name.startswith(EVERY_TIER_PREFIXES)}
    todo = list(inputs)
    while todo:
        name = todo.pop()
        for _, other, value in variables:
            if other != name:
                continue
            text = json.dumps(value, sort_keys=True, default=str).encode()
            for word in WORD.findall(text):
                used = word.decode()
                if used in defined and used not in inputs:
                    inputs.add(used)
                    todo.append(used)
    return inputs


def inputs_digest(task_vars: dict[str, Any], loader: Any, tier: str | None = None, root: Path = ROOT) -> str:
    """sha256 of what a tier converges from: its project files (tier_files), the variables of the
    inventory and the extra vars that it reads (tier_inputs; the inventory's files that are not
    plain variables, whole), the hosts and their groups (not secrets)."""
    return tier_digests(task_vars, loader, tier, root)[0]


def _short(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tier_digests(
    task_vars: dict[str, Any], loader: Any, tier: str | None = None, root: Path = ROOT
) -> tuple[str, dict[str, dict[str, str]]]:
    """inputs_digest, and the parts it was made of, each with a short digest, by kind (PART_KINDS):
    what a check names when the digest changed."""
    hasher = hashlib.sha256()
    parts: dict[str, dict[str, str]] = {kind: {} for kind in PART_KINDS}
    for relative, full in tier_files(tier, root):
        digest = _scan(full)[0]
        hasher.update(f"{relative}\0{digest}\0".encode())
        parts["files"][relative] = digest[:16]
    variables, whole = inventory_vars(tuple(str(s) for s in task_vars.get("ansible_inventory_sources") or []))
    extra = {k: v for k, v in load_extra_vars(loader).items() if k not in NOT_INPUTS}
    variables = variables + [("extra vars", str(name), value) for name, value in extra.items()]
    inputs = tier_inputs(variables, tier_names(tier, root))
    kept = sorted(
        (where, name, json.dumps(value, sort_keys=True, default=str))
        for where, name, value in variables
        if name in inputs
    )
    hasher.update(json.dumps(kept).encode())
    by_name: dict[str, list[tuple[str, str]]] = {}
    for where, name, value in kept:
        by_name.setdefault(name, []).append((where, value))
    parts["variables"] = {name: _short(places) for name, places in by_name.items()}
    for where, content in sorted(whole):
        hasher.update(f"{where}\0".encode())
        hasher.update(content)
        parts["inventory files"][where] = hashlib.sha256(content).hexdigest()[:16]
    groups = {
        k: sorted(v) for k, v in (task_vars.get("groups") or {}).items() if not k.startswith("cf_converge_")
    }
    hasher.update(json.dumps(groups, sort_keys=True).encode())
    hostvars = task_vars.get("hostvars") or {}
    hosts = {}
    for host in groups.get("all", []):
        try:
            hosts[host] = str(hostvars[host].get("ansible_host", host))
        except Exception:  # an unresolvable host counts as itself
            hosts[host] = host
    hasher.update(json.dumps(hosts, sort_keys=True).encode())
    parts["hosts"] = {"groups": _short(groups), "addresses": _short(hosts)}
    return hasher.hexdigest(), parts


def secrets_digests(secrets_dir: str | None) -> dict[str, str]:
    """Each file of the secrets directory (its path there) and a digest of its content.

    A tier is stale when a secret it converged with changed or vanished; a secret that appeared
    since (a later tier's key, another host's certificate) is not one it read.
    """
    digests: dict[str, str] = {}
    if not secrets_dir or not Path(secrets_dir).is_dir():
        return digests
    root = Path(secrets_dir)
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not (Path(directory) == root and d in SECRETS_NOT_INPUTS))
        for name in sorted(files):
            full = Path(directory, name)
            if Path(directory) == root and name in SECRETS_NOT_INPUTS:
                continue
            try:
                content = full.read_bytes()
            except OSError as exc:
                content = f"unreadable {exc.errno}".encode()
            relative = str(full.relative_to(root))
            digests[relative] = hashlib.sha256(relative.encode() + b"\0" + content).hexdigest()[:32]
    return digests


def _load_judge() -> Any:
    """The module's judge(): one rule of the fast path, whether the node or a snapshot is read."""
    path = ROOT / "plugins/modules/clusterforge_converge_state.py"
    spec = importlib.util.spec_from_file_location("clusterforge_converge_state_module", path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded.judge


judge = _load_judge()


def judge_snapshot(
    snapshot: dict[str, Any],
    tier: str,
    inputs: str,
    secrets: dict[str, str],
    max_age: int,
    parts: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A tier's check from the node's snapshot of this run (mode=snapshot): no second read of the
    node. The tiers that converged since the snapshot recorded the node's new state, so a drift
    the snapshot did not see is one they made, as the module would find it."""
    drifted = list(snapshot.get("drifted") or [])
    marker = (snapshot.get("markers") or {}).get(tier)
    fresh, reason = judge(
        tier,
        bool(snapshot.get("recorded")),
        drifted,
        marker,
        inputs,
        secrets,
        int(max_age),
        time.time(),
        parts,
    )
    return {"changed": False, "fresh": fresh, "reason": reason, "drifted": drifted}


def restricted_tags(task_vars: dict[str, Any]) -> str:
    """Why the run's tags keep it from the fast path ("" when they do not)."""
    run_tags = set(task_vars.get("ansible_run_tags") or ["all"])
    skip_tags = set(task_vars.get("ansible_skip_tags") or [])
    skipped = sorted(skip_tags - NEUTRAL_SKIP_TAGS)
    if run_tags != {"all"}:
        return f"the run selects tags ({', '.join(sorted(run_tags))}): every task runs"
    if skipped:
        return f"the run skips tags ({', '.join(skipped)}): every task runs"
    return ""


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(
        ("tier", "mode", "paths", "venvs", "units", "ignore", "max_age", "state_dir", "secrets", "snapshot")
    )

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        with one_reading():
            return self._run(tmp, task_vars or {})

    def _run(self, tmp: Any, task_vars: dict[str, Any]) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        mode = args.get("mode")
        if mode not in ("check", "record", "snapshot"):
            return {**result, "failed": True, "msg": f"mode must be check, record or snapshot (got {mode!r})"}
        snapshot = args.pop("snapshot", None)
        switch = self._templar.template(task_vars.get("cluster_fast_converge", True))
        try:
            enabled = boolean(switch, strict=True)
        except TypeError:
            msg = f"cluster_fast_converge must be true or false (got {switch!r})"
            return {**result, "failed": True, "msg": msg}
        tags = restricted_tags(task_vars)
        if mode == "check" and (tags or not enabled):
            reason = tags or "cluster_fast_converge is off"
            return {**result, "changed": False, "fresh": False, "reason": reason, "drifted": []}
        if mode == "record" and (tags or self._task.check_mode):
            reason = tags or "check mode records nothing"
            return {**result, "changed": False, "skipped": True, "skip_reason": reason}
        if mode == "snapshot" and (tags or not enabled):
            reason = tags or "cluster_fast_converge is off"
            return {**result, "changed": False, "skipped": True, "skip_reason": reason}
        secrets = task_vars.get("cluster_secrets_dir")
        secrets_dir = self._templar.template(secrets) if secrets else None
        args["inputs"], args["parts"] = tier_digests(task_vars, self._loader, args.get("tier"))
        if mode == "snapshot":  # judges no tier on the node: the parts would only travel
            args["parts"] = {}
        started = snapshot.get("inputs") if isinstance(snapshot, dict) else None
        if (
            mode != "snapshot"
            and isinstance(started, dict)
            and isinstance(started.get(args.get("tier")), str)
        ):
            args["inputs"] = started[args.get("tier")]  # as the run read them at its start (snapshot.yml)
        args["secrets"] = secrets_digests(secrets_dir)
        args.setdefault(
            "paths", self._templar.template(task_vars.get("cluster_fast_converge_paths", DEFAULT_PATHS))
        )
        args.setdefault("venvs", DEFAULT_VENVS)
        args.setdefault("units", DEFAULT_UNITS)
        args.setdefault("ignore", DEFAULT_IGNORE)
        args.setdefault(
            "max_age", self._templar.template(task_vars.get("cluster_fast_converge_max_age", 86400))
        )
        if mode == "check" and isinstance(snapshot, dict) and "markers" in snapshot:
            outcome = judge_snapshot(
                snapshot,
                str(args.get("tier")),
                args["inputs"],
                args["secrets"],
                args["max_age"],
                args["parts"],
            )
        else:
            outcome = self._execute_module(
                module_name="clusterforge_converge_state", module_args=args, task_vars=task_vars
            )
        if mode == "snapshot" and not outcome.get("failed"):
            # Every tier's inputs as this run read them at its start: a tier that converges records
            # these (record), not what its files say by then (an edit made while the run went on
            # was not what it converged from, and the next run must see it).
            outcome["inputs"] = {
                tier: tier_digests(task_vars, self._loader, tier)[0] for tier in tier_names_of()
            }
            # Each tier judged now, with this run's inputs and secrets: a tier fresh on every host
            # needs no comparison of its own unless a tier before it converges (clusterforge_compare_hosts).
            outcome["fresh_tiers"] = sorted(
                tier
                for tier in outcome.get("markers") or {}
                if judge_snapshot(
                    outcome,
                    tier,
                    outcome["inputs"].get(tier) or tier_digests(task_vars, self._loader, tier)[0],
                    args["secrets"],
                    args["max_age"],
                )["fresh"]
            )
        if mode == "check" and outcome.get("fresh") is False:
            host = task_vars.get("inventory_hostname", "?")
            display.display(f"{host}: the {args.get('tier')} tier converges: {outcome.get('reason', '')}")
        return {**result, **outcome}
