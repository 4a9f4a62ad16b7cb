"""benchmarks/toyworld_scaling.py: the selection arithmetic (rank ensemble, pairwise accuracy)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def bench(benchmark_script):
    return benchmark_script("toyworld_scaling")


def test_pairwise_accuracy_counts_ordered_pairs_within_prompts(bench):
    names = bench.VERIFIERS
    ok = np.array([True, False, False, True])
    perfect = np.array([2.0, 0.0, 1.0, 3.0])  # both satisfying above both failing: 4 of 4 pairs
    half = np.array([1.0, 1.0, 0.0, 0.5])  # (1>1 tie, 1>0), (0.5<1, 0.5>0): 0.5 + 1 + 0 + 1 = 2.5 of 4
    records = [
        {"ok": ok, "scores": {names[0]: perfect, names[1]: half, names[2]: -perfect}},
        # a prompt whose candidates all fail has no pairs and is left out
        {"ok": np.zeros(4, dtype=bool), "scores": {n: np.arange(4.0) for n in names}},
    ]
    acc = bench.pairwise_accuracy(records)
    assert acc[names[0]] == {"accuracy": 1.0, "pairs": 4, "prompts": 1}
    assert acc[names[1]]["accuracy"] == pytest.approx(2.5 / 4)
    assert acc[names[2]]["accuracy"] == 0.0


def test_rank_mean_is_the_mean_rank(bench):
    a, b = np.array([0.1, 0.9, 0.5]), np.array([10.0, -1.0, 3.0])
    np.testing.assert_allclose(bench.rank_mean([a, b]), [(0 + 2) / 2, (2 + 0) / 2, (1 + 1) / 2])
