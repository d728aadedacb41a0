#!/usr/bin/env bash
# Benchmark postgate side by side with Debian's Postfix on this machine: prints a table
# and writes bench/results/latest.json and latest.md. See bench/README.md.
#
#   bash scripts/bench.sh                  # full run, about 10 minutes
#   bash scripts/bench.sh --quick          # smoke run, under a minute
#   bash scripts/bench.sh --scenario 1 6   # only some scenarios
#
# As root it installs Debian's postfix (smtp-source, smtp-sink), dovecot-core (SASL for
# Postfix's submission port) and nsd (DNS for postgate's SPF/DMARC checks) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_venv test,fast

need=()
[ -x /usr/sbin/postfix ] && [ -x /usr/sbin/smtp-source ] || need+=(postfix)
[ -x /usr/sbin/dovecot ] || need+=(dovecot-core)
[ -x /usr/sbin/nsd ] || need+=(nsd)
install_debian_packages "the Postfix side needs root" "${need[@]}"

# Scenario 5 holds 10,000 connections: the bench and the server each need a descriptor
# per connection. Raise the soft limit as far as the hard one allows (children inherit it).
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then
  ulimit -n 65536
else
  ulimit -n "$hard"
fi

# The JSON records the command exactly as it was typed.
BENCH_COMMAND="bash scripts/bench.sh${*:+ $*}" exec .venv/bin/python -m bench "$@"
