"""nested_subsets: seeded, nested, uniform."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from densescale.data import nested_subsets


def test_nested_and_seeded():
    sizes = [10, 100, 1000, 5000]
    subsets = nested_subsets(5000, sizes, seed=3)
    assert [len(s) for s in subsets] == sizes
    for small, big in itertools.pairwise(subsets):
        assert np.isin(small, big).all()
    for s in subsets:
        assert s.dtype == np.int64 and np.all(np.diff(s) > 0) and s.min() >= 0 and s.max() < 5000
    again = nested_subsets(5000, sizes, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(subsets, again))
    other = nested_subsets(5000, sizes, seed=4)
    assert not np.array_equal(subsets[1], other[1])
    # order of sizes does not matter: the subset of a size is the same
    rev = nested_subsets(5000, sizes[::-1], seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(subsets, rev[::-1]))


def test_uniform_over_pairs():
    counts = np.zeros(100)
    for seed in range(400):
        counts[nested_subsets(100, [10], seed=seed)[0]] += 1
    # each pair is picked with probability 0.1: 40 expected, sd ~6
    assert counts.min() > 15 and counts.max() < 65


@pytest.mark.parametrize(
    ("num_pairs", "sizes", "error", "message"),
    [
        (10, [5, 11], ValueError, r"sizes must be <= num_pairs \(10\), got 11"),
        (10, [0], ValueError, "sizes must be >= 1"),
        (0, [1], ValueError, "num_pairs must be >= 1"),
        (10, [], ValueError, "sizes must not be empty"),
        (10, [2.5], TypeError, "sizes must hold ints"),
        (10, 5, TypeError, "sizes must be a sequence"),
        (10.0, [5], TypeError, "num_pairs must be an int"),
    ],
)
def test_errors(num_pairs, sizes, error, message):
    with pytest.raises(error, match=message):
        nested_subsets(num_pairs, sizes, seed=0)
