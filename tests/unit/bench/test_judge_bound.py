"""The judge's false-rollback bound on every family of realistic traffic (bench/sim.py).

The target is at most 1 % of healthy canaries rolled back in every healthy setting of every
family, measured by `python -m bench.judge` at 500 replicas. Here, in the test budget, 200
seeded replicas per setting (ours only): a true rate of 1 % gives 6 or more rollbacks in 200
with probability 1.6 %, 8 or more with 0.1 %, so more than 7 fails the test. The seeds are
fixed, so the figure is the same on every run; a change to the judge that pushes any family
past the bound fails here.
"""

from __future__ import annotations

import pytest

from bench.judge import DEFAULT_SEED, replica_seed, run_ours
from bench.sim import SCENARIOS, Traffic

REPLICAS = 200
MOST_ROLLBACKS = 7
HEALTHY = [name for name, scenario in SCENARIOS.items() if scenario.healthy]


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_canaries_are_rarely_rolled_back(name: str) -> None:
    index = list(SCENARIOS).index(name)
    outcomes = [run_ours(Traffic(SCENARIOS[name], replica_seed(DEFAULT_SEED, index, r))).outcome
                for r in range(REPLICAS)]
    rolled_back = outcomes.count("rolled_back")
    assert rolled_back <= MOST_ROLLBACKS, f"{name}: {rolled_back}/{REPLICAS} healthy canaries rolled back"
