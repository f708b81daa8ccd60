"""Study result records: checked, then averaged into cells (one point per (source, N, D)).

A record is one trained and evaluated grid cell of a study::

    {"model": "bert-L4-H256", "N": 3422208, "D": 10000, "source": "human", "ce": 0.119,
     "metrics": {"mrr@10": 0.31, ...}, ...}   # further keys are ignored

Records of the same (source, N, D) (e.g. several seeds) are averaged into one point before
fitting, so repeated seeds never count as extra design points.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import numpy as np

from ._checks import positive_number


def check_records(records) -> list[dict]:
    if isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Sequence):
        raise TypeError(f"records must be a list of dicts, got {type(records).__name__}")
    if len(records) == 0:
        raise ValueError("records must not be empty")
    out = []
    for i, r in enumerate(records):
        where = f"records[{i}]"
        if not isinstance(r, Mapping):
            raise TypeError(f"{where} must be a dict, got {type(r).__name__}")
        for key in ("model", "N", "D", "source", "ce"):
            if key not in r:
                raise ValueError(f"{where} is missing the key {key!r} (has {sorted(r)})")
        for key in ("model", "source"):
            if not isinstance(r[key], str) or not r[key]:
                raise TypeError(f"{where}[{key!r}] must be a non-empty str, got {r[key]!r}")
        for key in ("N", "D"):
            v = r[key]
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
                raise ValueError(f"{where}[{key!r}] must be a positive int, got {v!r}")
        ce = r["ce"]
        if isinstance(ce, bool) or not isinstance(ce, numbers.Real):
            raise TypeError(f"{where}['ce'] must be a real number, got {type(ce).__name__}")
        if not math.isfinite(ce) or ce <= 0:
            raise ValueError(f"{where}['ce'] must be finite and > 0, got {ce!r}")
        metrics = r.get("metrics", {}) or {}
        if not isinstance(metrics, Mapping):
            raise TypeError(f"{where}['metrics'] must be a dict, got {type(metrics).__name__}")
        for k, v in metrics.items():
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"{where}['metrics'][{k!r}] must be a number, got {v!r}")
        out.append(
            {
                "model": r["model"],
                "N": int(r["N"]),
                "D": int(r["D"]),
                "source": r["source"],
                "ce": float(ce),
                "metrics": {str(k): float(v) for k, v in metrics.items()},
            }
        )
    return out


def check_oracle(oracle_ce, sources: list[str]) -> dict[str, float]:
    if oracle_ce is None:
        return {}
    if isinstance(oracle_ce, Mapping):
        out = {}
        for k, v in oracle_ce.items():
            out[str(k)] = positive_number(f"oracle_ce[{k!r}]", v)
        return out
    v = positive_number("oracle_ce", oracle_ce)
    return dict.fromkeys(sources, v)


def cells_of(records: list[dict], source: str) -> list[dict]:
    groups: dict[tuple[int, int], list[dict]] = {}
    for r in records:
        if r["source"] == source:
            groups.setdefault((r["N"], r["D"]), []).append(r)
    cells = []
    for (n, d), rs in sorted(groups.items()):
        names = sorted({m for r in rs for m in r["metrics"]})
        cells.append(
            {
                "model": rs[0]["model"],
                "N": n,
                "D": d,
                "runs": len(rs),
                "ce": float(np.mean([r["ce"] for r in rs])),
                "metrics": {
                    k: float(np.mean([r["metrics"][k] for r in rs if k in r["metrics"]]))
                    for k in names
                },
            }
        )
    return cells
