"""Nested, seeded subsets of the annotated training pairs for data-size sweeps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def nested_subsets(num_pairs: int, sizes: Sequence[int], seed: int = 0) -> list[np.ndarray]:
    """Seeded nested subsets of ``range(num_pairs)``, one per entry of ``sizes``.

    One permutation ``perm`` of ``range(num_pairs)`` is drawn with ``numpy.random.default_rng(seed)``;
    the subset of size D is ``sort(perm[:D])``. So subsets are uniformly random, and
    ``subsets[i]`` is contained in ``subsets[j]`` whenever ``sizes[i] <= sizes[j]`` (D1 in D2 in ...),
    which keeps a data-size curve smooth. ``sizes`` count annotated (q, p+) pairs, as D in the paper.

    Returns a list of sorted int64 arrays, in the order of ``sizes``.
    """
    if isinstance(num_pairs, bool) or not isinstance(num_pairs, (int, np.integer)):
        raise TypeError(f"num_pairs must be an int, got {type(num_pairs).__name__}")
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
    if isinstance(sizes, (int, np.integer)) or not isinstance(sizes, Sequence | np.ndarray):
        raise TypeError(f"sizes must be a sequence of ints, got {type(sizes).__name__}")
    if len(sizes) == 0:
        raise ValueError("sizes must not be empty")
    for d in sizes:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"sizes must hold ints, got {d!r} ({type(d).__name__})")
        if d < 1:
            raise ValueError(f"sizes must be >= 1, got {d}")
        if d > num_pairs:
            raise ValueError(f"sizes must be <= num_pairs ({num_pairs}), got {d}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    perm = np.random.default_rng(seed).permutation(num_pairs)
    return [np.sort(perm[: int(d)]).astype(np.int64) for d in sizes]
