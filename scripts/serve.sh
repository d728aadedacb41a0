#!/usr/bin/env bash
# Set up and run postgate on the embedded default: SQLite, a self-signed certificate,
# ports 2525 (MX), 2587 (submission) and 2465 (implicit TLS); no privileges needed.
# The first run creates ./var (config, certificate, first user) and prints the user's
# password once. Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_venv fast
if [ ! -f var/postgate.toml ]; then
  .venv/bin/postgate init --dir var --domain "${POSTGATE_DOMAIN:-localhost}"
  echo
fi
exec .venv/bin/postgate --config var/postgate.toml serve
