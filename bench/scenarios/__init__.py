"""bench.scenarios — the six scenarios, numbered as in the performance issue."""
