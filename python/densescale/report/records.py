"""Study result records: checked, then averaged into cells (one point per (source, N, D, d)).

A record is one trained and evaluated grid cell of a study::

    {"model": "bert-L4-H256", "N": 3422208, "D": 10000, "source": "human", "ce": 0.119,
     "metrics": {"mrr@10": 0.31, "ndcg@10": 0.37, ...},
     # optional yardsticks (older records lack them; each is used when present):
     "d": 768,                      # embedding dimension (out_dim); absent: one d for all
     "chance_ce": 5.5491,           # ln(K + 1) for the K evaluation negatives
     "oracle_ce": 0.12,             # the collection's oracle CE, or None
     "converged": True,             # stopped by patience (not by the step cap)
     "near_chance": False,          # ce >= 0.9 * chance_ce
     "flags": ["not_converged"],    # e.g. near_chance, not_converged, seen_passage_bias
     "seen_bias": {"mean_score_seen": ..., "mean_score_unseen": ..., "mean_score_positive": ...,
                   "top10_seen_fraction": ..., "corpus_seen_fraction": ...,
                   "decides_ranking": False},
     "checkpoint": "google/bert_uncased_L-4_H-256_A-4",   # or None (random init)
     "num_passages": 8841823,       # the evaluated corpus (or "corpus_size"): the cost model's
                                    # corpus size when the report is not given a cost model
     ...}   # further keys are ignored

Records of the same (source, N, D, d) (e.g. several seeds) are averaged into one point before
fitting, so repeated seeds never count as extra design points. The other inputs of a report are
checked here too: the oracle CE (:func:`check_oracle`) and the lexical baselines
(:func:`check_baselines`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import numpy as np

from densescale.scaling._checks import positive_number

NEAR_CHANCE_FRACTION = 0.9
"""A cell whose CE is at least this fraction of chance, ln(K+1), has not learned to rank."""

_SEEN_BIAS_NUMBERS = (
    "mean_score_seen",
    "mean_score_unseen",
    "mean_score_positive",
    "top10_seen_fraction",
    "corpus_seen_fraction",
)


def _optional_stderr(where: str, r: Mapping) -> float | None:
    v = r.get("ce_stderr")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{where}['ce_stderr'] must be a finite number >= 0 or None, got {v!r}")
    return float(v)


def _optional_positive(where: str, r: Mapping, key: str) -> float | None:
    v = r.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{where}[{key!r}] must be a real number or None, got {v!r}")
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{where}[{key!r}] must be finite and > 0, got {v!r}")
    return float(v)


def _optional_bool(where: str, r: Mapping, key: str) -> bool | None:
    v = r.get(key)
    if v is None:
        return None
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{where}[{key!r}] must be a bool or None, got {v!r}")
    return bool(v)


def _seen_bias(where: str, r: Mapping) -> dict | None:
    v = r.get("seen_bias")
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise TypeError(f"{where}['seen_bias'] must be a dict or None, got {type(v).__name__}")
    out: dict = {}
    for key in _SEEN_BIAS_NUMBERS:
        x = v.get(key)
        if x is None:
            continue
        if isinstance(x, bool) or not isinstance(x, numbers.Real):
            raise TypeError(f"{where}['seen_bias'][{key!r}] must be a number, got {x!r}")
        out[key] = float(x)
    out["decides_ranking"] = bool(_optional_bool(f"{where}['seen_bias']", v, "decides_ranking"))
    return out


def check_records(records) -> list[dict]:
    """Check every record (the error names the record and key) and return normalised copies.

    Each copy has every key of the module docstring (None / [] / {} where a record lacks it);
    a record with a ``checkpoint`` gets the source ``"<source> (fine-tuned)"``, so pretrained and
    from-scratch cells are fitted as separate families;
    ``near_chance`` is also set when ``ce >= 0.9 * chance_ce``, and ``flags`` holds
    "near_chance", "not_converged" and "seen_passage_bias" whenever those hold.
    """
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
        for key in ("N", "D", "d"):
            v = r.get(key)
            if key == "d" and v is None:
                continue
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
        checkpoint = r.get("checkpoint")
        if checkpoint is not None and not isinstance(checkpoint, str):
            raise TypeError(f"{where}['checkpoint'] must be a str or None, got {checkpoint!r}")
        flags = r.get("flags") or []
        if isinstance(flags, str) or not isinstance(flags, Sequence):
            raise TypeError(f"{where}['flags'] must be a list of str, got {flags!r}")
        if not all(isinstance(f, str) for f in flags):
            raise TypeError(f"{where}['flags'] must be a list of str, got {flags!r}")
        chance = _optional_positive(where, r, "chance_ce")
        converged = _optional_bool(where, r, "converged")
        seen = _seen_bias(where, r)
        near = bool(_optional_bool(where, r, "near_chance")) or (
            chance is not None and float(ce) >= NEAR_CHANCE_FRACTION * chance
        )
        flags = list(dict.fromkeys(str(f) for f in flags))
        for flag, on in (
            ("near_chance", near),
            ("not_converged", converged is False),
            ("seen_passage_bias", bool(seen and seen["decides_ranking"])),
        ):
            if on and flag not in flags:
                flags.append(flag)
        out.append(
            {
                "model": r["model"],
                "N": int(r["N"]),
                "D": int(r["D"]),
                "d": None if r.get("d") is None else int(r["d"]),
                # fine-tuned checkpoints and models from scratch follow different laws: each
                # family is fitted (and reported) on its own
                "source": r["source"] if checkpoint is None else f"{r['source']} (fine-tuned)",
                "ce": float(ce),
                # standard error of the CE over test queries (None when the record has none)
                "ce_stderr": _optional_stderr(where, r),
                "metrics": {str(k): float(v) for k, v in metrics.items()},
                "checkpoint": checkpoint,
                "chance_ce": chance,
                "oracle_ce": _optional_positive(where, r, "oracle_ce"),
                "converged": converged,
                "near_chance": near,
                "flags": flags,
                "seen_bias": seen,
                # ranking metrics clearly above a random ranking's (eval.chance.above_chance)
                "metrics_above_chance": {
                    str(k): bool(v) for k, v in (r.get("metrics_above_chance") or {}).items()
                },
                "corpus_size": _corpus_size(where, r),
                "evaluation": _evaluation(r),
            }
        )
    return out


def _evaluation(r: Mapping) -> dict:
    """What a record was evaluated on (only what it says; absent fields are None): the evaluated
    passages, the CE pool, the share of pairs whose positive is a training positive, and CE /
    MRR@10 on the clean subset without them."""
    overlap = r.get("overlap") if isinstance(r.get("overlap"), Mapping) else {}
    clean = r.get("clean") if isinstance(r.get("clean"), Mapping) else {}

    def number(v):
        ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
        return float(v) if ok else None

    return {
        "passages": number(r.get("num_passages")),
        "pool": number(r.get("pool_size")),
        "num_negatives": number(r.get("num_negatives")),
        "overlap_share": number(overlap.get("share")),
        "clean_queries": number(clean.get("num_queries")),
        "clean_ce": number(clean.get("ce")),
        "clean_mrr": number((clean.get("metrics") or {}).get("mrr@10")),
    }


def _corpus_size(where: str, r: Mapping) -> int | None:
    """The evaluated corpus of a record: ``corpus_size``, else the evaluation's ``num_passages``."""
    key = "corpus_size" if r.get("corpus_size") is not None else "num_passages"
    v = r.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 1:
        raise ValueError(f"{where}[{key!r}] must be a positive number of passages, got {v!r}")
    return int(v)


def exclusion_reasons(record: Mapping, *, include_unconverged: bool = False) -> list[str]:
    """Why a normalised record is left out of the law fits ([] when it is kept)."""
    reasons = []
    if record["near_chance"]:
        if record["chance_ce"] is not None:
            reasons.append(
                f"near chance (CE {record['ce']:.4g} >= {NEAR_CHANCE_FRACTION} x ln(K+1) = "
                f"{NEAR_CHANCE_FRACTION * record['chance_ce']:.4g}): it has not learned to rank"
            )
        else:
            reasons.append("near chance (flagged by the study): it has not learned to rank")
    if record["converged"] is False and not include_unconverged:
        flags = record.get("flags", ())
        if "peaked_early" in flags:
            why = "its best dev CE came at its first evaluations"
        elif "memorising" in flags:
            why = "memorising: dev CE ended above chance"
        elif "above_chance" in flags:
            why = "dev CE never went below chance"
        else:
            why = "stopped by the step cap, not by patience"
        reasons.append(f"not converged ({why})")
    return reasons


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


def _sort_key(key: tuple) -> tuple:
    n, d_size, dim = key
    return (n, d_size, -1 if dim is None else dim)


def cells_of(records: list[dict], source: str | None = None) -> list[dict]:
    """Average normalised records of ``source`` (all sources when None) into one cell per
    (source, N, D, d): CE and metrics are means; ``runs`` counts the records; ``flags`` is the
    union; ``converged`` is True only when every run converged (None when no run says)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if source is None or r["source"] == source:
            groups.setdefault((r["source"], r["N"], r["D"], r["d"]), []).append(r)
    cells = []
    for (src, n, d_size, dim), rs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], *_sort_key(kv[0][1:]))
    ):
        names = sorted({m for r in rs for m in r["metrics"]})
        known = [r["converged"] for r in rs if r["converged"] is not None]
        chance = [r["chance_ce"] for r in rs if r["chance_ce"] is not None]
        oracle = [r["oracle_ce"] for r in rs if r["oracle_ce"] is not None]
        seen = [r["seen_bias"] for r in rs if r["seen_bias"] is not None]
        cells.append(
            {
                "source": src,
                "model": rs[0]["model"],
                "checkpoint": rs[0]["checkpoint"],
                "N": n,
                "D": d_size,
                "d": dim,
                "runs": len(rs),
                "ce": float(np.mean([r["ce"] for r in rs])),
                "ce_stderr": _cell_stderr(rs),
                "metrics": {
                    k: float(np.mean([r["metrics"][k] for r in rs if k in r["metrics"]]))
                    for k in names
                },
                "chance_ce": float(np.mean(chance)) if chance else None,
                "oracle_ce": float(np.mean(oracle)) if oracle else None,
                "converged": all(known) if known else None,
                "near_chance": any(r["near_chance"] for r in rs),
                "metrics_signal": sorted(
                    {m for r in rs for m, ok in r["metrics_above_chance"].items() if ok}
                ),
                "flags": list(dict.fromkeys(f for r in rs for f in r["flags"])),
                "seen_bias": seen[0] if seen else None,
                "decides_ranking": any(s["decides_ranking"] for s in seen),
                "evaluation": _mean_evaluation([r["evaluation"] for r in rs]),
            }
        )
    return cells


def _cell_stderr(rs: list[dict]) -> float | None:
    """Standard error of a cell's mean CE: the test-query errors of its runs combined
    (``sqrt(sum se^2) / n``), or, with several seeds, the spread of their CEs when larger
    (``std / sqrt(n)``: seed noise as well as query noise). None when a run has no error."""
    se = [r["ce_stderr"] for r in rs]
    if any(v is None for v in se):
        return None
    n = len(rs)
    out = float(np.sqrt(np.sum(np.square(se))) / n)
    if n >= 2:
        out = max(out, float(np.std([r["ce"] for r in rs], ddof=1) / np.sqrt(n)))
    return out


def _mean_evaluation(evals: list[dict]) -> dict:
    out = {}
    for key in evals[0]:
        vals = [e[key] for e in evals if e.get(key) is not None]
        out[key] = float(np.mean(vals)) if vals else None
    return out


def check_baselines(baselines) -> dict[str, dict]:
    """Check reference rows such as ``{"BM25": {"metrics": {"mrr@10": 0.4}, "split": "test"}}``
    and return clean copies (``{}`` for None)."""
    if baselines is None:
        return {}
    if not isinstance(baselines, Mapping):
        raise TypeError(
            "baselines must be a dict like {'BM25': {'metrics': {'mrr@10': 0.4}, 'split': "
            f"'test'}}, got {type(baselines).__name__}"
        )
    out = {}
    for name, b in baselines.items():
        where = f"baselines[{name!r}]"
        if not isinstance(name, str) or not name:
            raise TypeError(f"baselines keys must be non-empty str, got {name!r}")
        if not isinstance(b, Mapping):
            raise TypeError(f"{where} must be a dict with 'metrics', got {type(b).__name__}")
        metrics = b.get("metrics")
        if not isinstance(metrics, Mapping):
            raise TypeError(f"{where}['metrics'] must be a dict of numbers, got {metrics!r}")
        clean = {}
        for k, v in metrics.items():
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise TypeError(f"{where}['metrics'][{k!r}] must be a finite number, got {v!r}")
            clean[str(k)] = float(v)
        split = b.get("split")
        if split is not None and not isinstance(split, str):
            raise TypeError(f"{where}['split'] must be a str, got {split!r}")
        corpus = b.get("corpus")
        if corpus is not None and not isinstance(corpus, str):
            raise TypeError(f"{where}['corpus'] must be a str describing it, got {corpus!r}")
        out[name] = {"metrics": clean, "split": split, "corpus": corpus}
    return out
