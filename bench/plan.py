"""bench.plan — how much each scenario sends: the full run and the --quick smoke run.

DESCRIPTION
    Counts are chosen so the full run of all six scenarios stays under about ten
    minutes on a 2-core machine and --quick under a minute; every run is also
    bounded in time by its own timeout. Rounds: each scenario runs postgate, Postfix,
    postgate, Postfix... ``rounds`` times each (2 quick, 3 full).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Plan:
    rounds: int
    warmup_messages: int
    # Scenario 1/2: sessions -> messages per run.
    small_messages: dict[int, int] = field(default_factory=dict)
    small_no_reuse_messages: int = 0  # 10 sessions, a new connection per message
    large_messages: dict[int, int] = field(default_factory=dict)
    # Scenario 3: 10 sessions; connections per run for (a) 1 and (b) 5 messages each.
    submission_sessions: int = 10
    submission_single_connections: int = 0
    submission_multi_connections: int = 0
    submission_multi_messages: int = 5
    submission_warmup_connections: int = 2
    submission_uncached_connections: int = 0  # (a') postgate's credential cache off; 0 skips
    # Scenario 4: messages queued then delivered per run.
    outbound_messages: int = 0
    outbound_fill_sessions: int = 10
    # Scenario 5: idle connections per server and fresh-client samples.
    idle_postgate: int = 0
    idle_postfix: int = 0
    idle_fresh_samples: int = 0
    idle_settle_seconds: float = 1.0  # before each memory reading
    # Scenario 6: transactions per run, connections in the pool, warm-up transactions.
    latency_transactions: int = 0
    latency_pool: int = 20
    latency_warmup: int = 0


QUICK = Plan(
    rounds=2,
    warmup_messages=10,
    small_messages={1: 50, 10: 200, 50: 250},
    small_no_reuse_messages=50,
    large_messages={1: 10, 10: 40, 50: 60},
    submission_single_connections=10,
    submission_multi_connections=4,
    submission_warmup_connections=1,
    outbound_messages=100,
    idle_postgate=500,
    idle_postfix=20,
    idle_fresh_samples=5,
    idle_settle_seconds=0.3,
    latency_transactions=200,
    latency_warmup=20,
)

FULL = Plan(
    rounds=3,
    warmup_messages=20,
    small_messages={1: 500, 10: 2500, 50: 2500},
    small_no_reuse_messages=1000,
    large_messages={1: 150, 10: 500, 50: 500},
    submission_single_connections=100,
    submission_multi_connections=40,
    submission_uncached_connections=40,
    outbound_messages=2000,
    idle_postgate=10_000,
    idle_postfix=200,
    idle_fresh_samples=20,
    latency_transactions=2000,
    latency_warmup=100,
)


def plan_for(quick: bool) -> Plan:
    return QUICK if quick else FULL
