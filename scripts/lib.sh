# shellcheck shell=bash
# Shared helpers for the scripts in this directory. Source it; do not run it.

CF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CF_VENV="${CF_VENV:-${CF_ROOT}/.venv}"
export CF_ROOT CF_VENV

die() { printf 'error: %s\n' "$*" >&2; exit 1; }
info() { printf '==> %s\n' "$*" >&2; }

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
