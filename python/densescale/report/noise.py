"""Seed noise as a yardstick: how far the runs of one cell fall apart, against the gaps between
adjacent sizes of a slice (pure functions over records and arrays).

Two runs of the same cell (model, D, d, source) that differ only in their seed (initialisation,
data order, negatives) can land further apart than two adjacent model sizes: then the order of
those sizes, and any law fitted through them, is partly noise. With two seeds or more per cell,

- :func:`seed_spreads` gives each cell its seed spread: max - min and the sample standard
  deviation (ddof = 1) of CE and of every ranking metric over its runs;
- :func:`adjacent_resolution` compares one seed spread (the report uses the median max - min
  over the multi-run cells of the slice, else of the source) with the gap between the means of
  adjacent sizes of the slice; a pair is *not resolved* when ``factor x spread >= gap``
  (``factor`` default :data:`RESOLVE_FACTOR` = 1: the spread is as large as the gap; 2 asks
  every gap to be more than twice the spread).

max - min rather than the standard deviation: with the two seeds a study usually has, it is the
one difference observed, and a gap smaller than the distance two seeds of one cell fall apart
cannot be told from it. With one run per cell the spread is unknown, and the report says so.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

RESOLVE_FACTOR = 1.0
"""Adjacent sizes are not resolved when this factor x the seed spread >= the gap between them."""


@dataclass(frozen=True)
class CellSpread:
    """The seed spread of one cell.

    Attributes:
        source, model, N, D, d: the cell.
        runs: records averaged into the cell.
        ce_range, ce_std: max - min and sample std (ddof = 1) of CE over the runs (None with one
            run).
        metric_range, metric_std: the same per ranking metric present in every run.
    """

    source: str
    model: str
    N: int
    D: int
    d: int | None
    runs: int
    ce_range: float | None
    ce_std: float | None
    metric_range: dict
    metric_std: dict

    def spread(self, quantity: str = "ce") -> float | None:
        """max - min of ``quantity`` ("ce" or a metric name) over the runs, None when unknown."""
        return self.ce_range if quantity == "ce" else self.metric_range.get(quantity)

    def to_json(self) -> dict:
        """Every field but ``source`` (the section it is written under names it)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "source"}


def seed_spreads(records: Sequence[Mapping]) -> list[CellSpread]:
    """One :class:`CellSpread` per (source, N, D, d) of normalised records
    (:func:`densescale.report.records.check_records`), in the order of
    :func:`~densescale.report.records.cells_of`."""
    groups: dict[tuple, list[Mapping]] = {}
    for r in records:
        groups.setdefault((r["source"], r["N"], r["D"], r["d"]), []).append(r)
    out = []
    for (src, n, d_size, dim), rs in sorted(
        groups.items(),
        key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], -1 if kv[0][3] is None else kv[0][3]),
    ):
        multi = len(rs) >= 2
        ce = np.array([r["ce"] for r in rs], dtype=float)
        names = sorted(set.intersection(*(set(r["metrics"]) for r in rs)))
        ranges, stds = {}, {}
        if multi:
            for k in names:
                v = np.array([r["metrics"][k] for r in rs], dtype=float)
                ranges[k], stds[k] = float(np.ptp(v)), float(np.std(v, ddof=1))
        out.append(
            CellSpread(
                source=src,
                model=rs[0]["model"],
                N=int(n),
                D=int(d_size),
                d=dim,
                runs=len(rs),
                ce_range=float(np.ptp(ce)) if multi else None,
                ce_std=float(np.std(ce, ddof=1)) if multi else None,
                metric_range=ranges,
                metric_std=stds,
            )
        )
    return out


def median_spread(spreads: Sequence[CellSpread], quantity: str = "ce") -> float | None:
    """The median max - min of ``quantity`` over the cells with two runs or more (None: none)."""
    known = [s.spread(quantity) for s in spreads if s.spread(quantity) is not None]
    return float(np.median(known)) if known else None


@dataclass(frozen=True)
class Resolution:
    """A seed spread against the gaps between adjacent sizes of one slice.

    Attributes:
        quantity: "ce" or a metric name.
        spread: the seed spread compared (max - min, in the quantity's unit).
        spread_from: where it comes from, e.g. "median over 4 cells of this slice".
        size_name: "N" or "D".
        pairs: ((size_a, size_b, gap), ...) adjacent sizes, ascending, with |mean_b - mean_a|.
        unresolved: the pairs whose gap <= factor x spread.
        factor: see :data:`RESOLVE_FACTOR`.
    """

    quantity: str
    spread: float
    spread_from: str
    size_name: str
    pairs: tuple
    unresolved: tuple
    factor: float = RESOLVE_FACTOR

    @property
    def resolved(self) -> bool:
        return not self.unresolved

    @property
    def smallest_gap(self) -> float:
        return min(g for _, _, g in self.pairs)

    def describe(self) -> str:
        """E.g. "adjacent sizes are not resolved: seed spread 0.24 nats >= gap 0.03 (N = 3,704
        -> 5,728; 2 of 5 adjacent pairs)"."""
        unit = " nats" if self.quantity == "ce" else ""
        what = "" if self.quantity == "ce" else f" in {_title(self.quantity)}"
        times = "" if self.factor == 1 else f"{self.factor:g} x "
        if self.resolved:
            return (
                f"adjacent sizes resolved{what}: {times}seed spread {self.spread:.3g}{unit} < "
                f"smallest gap {self.smallest_gap:.3g}"
            )
        a, b, gap = min(self.unresolved, key=lambda p: p[2])
        return (
            f"adjacent sizes are not resolved{what}: {times}seed spread {self.spread:.3g}{unit} "
            f">= gap {gap:.3g} ({self.size_name} = {a:,} -> {b:,}; {len(self.unresolved)} of "
            f"{len(self.pairs)} adjacent pairs)"
        )

    def to_json(self) -> dict:
        return {
            "quantity": self.quantity,
            "seed_spread": self.spread,
            "spread_from": self.spread_from,
            "factor": self.factor,
            "adjacent": [
                {f"{self.size_name}_a": a, f"{self.size_name}_b": b, "gap": g}
                for a, b, g in self.pairs
            ],
            "unresolved": len(self.unresolved),
            "resolved": self.resolved,
            "text": self.describe(),
        }


def adjacent_resolution(
    sizes,
    values,
    spread: float,
    *,
    quantity: str = "ce",
    size_name: str = "N",
    spread_from: str = "",
    factor: float = RESOLVE_FACTOR,
) -> Resolution:
    """Compare ``spread`` with the gaps between adjacent sizes.

    Args:
        sizes: (n,) distinct sizes of the slice (N or D), any order.
        values: (n,) the quantity per size (the cell means).
        spread: the seed spread (max - min) to compare with, >= 0.
        quantity, size_name, spread_from: for the texts.
        factor: a pair is not resolved when ``factor * spread >= gap``.

    Raises:
        ValueError: fewer than 2 sizes, repeated sizes, different lengths, or a bad spread.
    """
    sizes = np.asarray(sizes, dtype=float)
    values = np.asarray(values, dtype=float)
    if sizes.ndim != 1 or values.shape != sizes.shape:
        raise ValueError(
            f"sizes and values must be 1-d of one length, got {sizes.shape}, {values.shape}"
        )
    if len(sizes) < 2 or len(np.unique(sizes)) != len(sizes):
        raise ValueError(f"sizes must hold >= 2 distinct sizes, got {sizes.tolist()}")
    if not math.isfinite(spread) or spread < 0:
        raise ValueError(f"spread must be finite and >= 0, got {spread!r}")
    if isinstance(factor, bool) or not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor!r}")
    order = np.argsort(sizes)
    s, v = sizes[order], values[order]
    pairs = tuple(
        (int(s[i]), int(s[i + 1]), float(abs(v[i + 1] - v[i]))) for i in range(len(s) - 1)
    )
    unresolved = tuple(p for p in pairs if factor * spread >= p[2])
    return Resolution(
        quantity, float(spread), spread_from, size_name, pairs, unresolved, float(factor)
    )


def _title(name: str) -> str:
    from .agreement import metric_title

    return metric_title(name)
