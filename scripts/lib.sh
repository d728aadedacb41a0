# Shared by scripts/serve.sh and scripts/test.sh: make .venv with postgate installed.
# Sourced, not run.

ensure_python() {
  PY=${PYTHON:-python3}
  if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "postgate needs Python 3.11 or newer (found: $("$PY" --version 2>&1))" >&2
    exit 1
  fi
  if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
      echo "Python's venv module is missing: run 'sudo apt-get install python3-venv'" >&2
      exit 1
    fi
  fi
}

# ensure_venv EXTRAS: create .venv if needed and install postgate[EXTRAS] into it,
# again only when pyproject.toml changed since the last install.
ensure_venv() {
  local extras=$1
  ensure_python
  if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
  fi
  local stamp=".venv/.postgate-installed-$extras"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e ".[$extras]"
    touch "$stamp"
  fi
  # Byte-compile our own sources (pip does it for the dependencies): where the
  # environment sets PYTHONDONTWRITEBYTECODE, every CLI call would otherwise compile
  # what it imports again. Quick when nothing changed.
  .venv/bin/python -m compileall -q src >/dev/null
}

# install_debian_packages WHAT_IF_NOT_ROOT PACKAGE...: apt-get install the packages as
# root; otherwise print the command to run and what missing them means (WHAT_IF_NOT_ROOT).
install_debian_packages() {
  local consequence=$1
  shift
  [ $# -gt 0 ] || return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing $*"
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  else
    echo "missing: $* (sudo apt-get install $*); $consequence" >&2
  fi
}
