"""bench — postgate and Debian's Postfix side by side, on one machine, in one run.

SYNOPSIS
    bash scripts/bench.sh [--quick] [--scenario N ...]
    .venv/bin/python -m bench [--quick] [--scenario N ...]

DESCRIPTION
    Runs the six scenarios of the performance issue against a private postgate and a
    private Postfix 3.7 instance on loopback, alternating the two servers run by run,
    and writes bench/results/latest.json and latest.md. See bench/README.md for what
    each scenario measures and the fairness notes.
"""
