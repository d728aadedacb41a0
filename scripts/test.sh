#!/usr/bin/env bash
# Install everything the tests need and run the whole suite (lint, types, pytest).
# As root (as in CI) it installs Debian's postfix, swaks, nsd and dig when missing;
# otherwise it names what to install, and the tests that need them skip (in CI,
# CI=true, a missing part fails instead).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_venv test,fast

need=()
command -v /usr/sbin/postfix >/dev/null || need+=(postfix)
command -v swaks >/dev/null || need+=(swaks)
command -v /usr/sbin/nsd >/dev/null || need+=(nsd)
command -v dig >/dev/null || need+=(bind9-dnsutils)
command -v openssl >/dev/null || need+=(openssl)
perl -MMail::DKIM::Verifier -e1 2>/dev/null || need+=(libmail-dkim-perl)
command -v redis-server >/dev/null || need+=(redis-server)
install_debian_packages "the tests that need them skip" "${need[@]}"

# Redis backs the shared counters (lockout across nodes). CI machines run it already;
# start a private one when nothing answers on 6379 and the server binary is here.
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && command -v redis-server >/dev/null; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
fi

.venv/bin/ruff check --no-cache src tests
.venv/bin/ruff format --no-cache --check src tests
.venv/bin/mypy
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
