# shellcheck shell=bash
# Shared helpers for the scripts in this directory. Source it; do not run it.

CF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CF_VENV="${CF_VENV:-${CF_ROOT}/.venv}"
export CF_ROOT CF_VENV

die() { printf 'error: %s\n' "$*" >&2; exit 1; }
info() { printf '==> %s\n' "$*" >&2; }

# verdict RESULT...: the last line of a test run, where a reader of its tail looks: the steps that
# FAILed ("FAIL  name (N s)" results), or that every step passed.
verdict() {
  local line failed=""
  for line in "$@"; do
    [[ "${line}" == "FAIL  "* ]] || continue
    line="${line#FAIL  }"; failed+="${failed:+; }${line% (*)}"
  done
  if [[ -n "${failed}" ]]; then
    printf 'FAILED: %s\n' "${failed}"
  else
    printf 'PASSED: every step (%d)\n' "$#"
  fi
}

# stop_container NAME: stop a container at once (its process gets SIGKILL). podman stop can lose
# the race that remove_containers describes and fail on a container that did stop: that counts as
# stopped; only a container still running fails.
stop_container() {
  podman stop -t 0 "$1" >/dev/null 2>&1 && return 0
  [[ "$(podman container inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" == false ]]
}

# remove_containers WHAT SECONDS NAME...: remove containers (names or ids), giving each SECONDS
# to stop. podman (4.3) rm -f can lose a race with a container that stops by itself between the
# stop signal and the kill: it fails with "container state improper: stopped" and leaves the
# container in that state until its exit is cleaned up, which can take seconds on a busy host. Ask
# again up to 4 times, after 1, 2, 3 and 4 s, cleaning up the exit first; fail only if one is
# still there, naming WHAT, the containers and podman's last words.
remove_containers() {
  local what="$1" seconds="$2" name left err try
  shift 2
  (($#)) || return 0
  left=("$@")
  for try in 0 1 2 3 4; do
    if ((try)); then
      printf 'note: %s: podman rm: %s; asking again in %s s\n' "${what}" "${err##*$'\n'}" "${try}" >&2
      sleep "${try}"
      podman container cleanup "${left[@]}" >/dev/null 2>&1 || true
    fi
    err="$(podman rm -f -t "${seconds}" "${left[@]}" 2>&1 >/dev/null)" && return 0
    left=()
    for name in "$@"; do podman container exists "${name}" && left+=("${name}"); done
    ((${#left[@]})) || return 0
  done
  printf 'error: %s: podman could not remove %s: %s\n' "${what}" "${left[*]}" "${err##*$'\n'}" >&2
  return 1
}

# Make sure the controller virtual environment exists; build it with scripts/bootstrap if not.
ensure_venv() {
  if [[ ! -x "${CF_VENV}/bin/ansible-playbook" ]]; then
    info "no controller environment at ${CF_VENV}: running scripts/bootstrap"
    "${CF_ROOT}/scripts/bootstrap" || die "scripts/bootstrap failed; fix the error above and run it again"
  fi
  export PATH="${CF_VENV}/bin:${PATH}"
  export ANSIBLE_CONFIG="${CF_ROOT}/ansible.cfg"
  # Rootful podman here lacks CAP_SYS_RESOURCE and a unified cgroup tree: the project's own
  # containers.conf sets runc, cgroupfs and rlimits without touching the host's global config.
  export CONTAINERS_CONF="${CF_ROOT}/lab/containers.conf"
}

# Stage timing: `stage NAME` closes the stage before (printing its time) and opens NAME;
# `stages_report` closes the last one and prints every stage with its time on one line.
CF_STAGES=()
CF_STAGE=""
CF_STAGE_T0=0
stage() {
  if [[ -n "${CF_STAGE}" ]]; then
    CF_STAGES+=("${CF_STAGE} $((SECONDS - CF_STAGE_T0)) s")
    info "${CF_STAGE}: done in $((SECONDS - CF_STAGE_T0)) s"
  fi
  CF_STAGE="$1"; CF_STAGE_T0=${SECONDS}
  [[ -z "${CF_STAGE}" ]] || info "${CF_STAGE} ..."
}
stages_report() {
  stage ""
  local out="" s
  for s in "${CF_STAGES[@]}"; do out+="${out:+, }${s}"; done
  info "stages: ${out}"
}

# The Ansible strategy for the runs the lab starts: mitogen_linear by default, or Ansible's own
# `linear` with CF_ANSIBLE_STRATEGY=linear (the one-variable fallback). mitogen is pinned with
# the ansible-core it was tested with; any other pair stops here, before a run, naming the fallback.
use_strategy() {
  local strategy="${CF_ANSIBLE_STRATEGY:-mitogen_linear}" dir
  case "${strategy}" in
    linear | free) export ANSIBLE_STRATEGY="${strategy}"; return 0 ;;
    mitogen_linear | mitogen_free) ;;
    *) die "CF_ANSIBLE_STRATEGY must be mitogen_linear, mitogen_free, linear or free (got '${strategy}')" ;;
  esac
  dir="$("${CF_VENV}/bin/python" "${CF_ROOT}/scripts/labtool.py" strategy 2>&1)" \
    || die "${dir#error: }; to run without mitogen set CF_ANSIBLE_STRATEGY=linear"
  export ANSIBLE_STRATEGY="${strategy}" ANSIBLE_STRATEGY_PLUGINS="${dir}"
}
