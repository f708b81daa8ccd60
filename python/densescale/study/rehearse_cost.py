"""What a rehearsal's measurements say about the real run: the rehearsal table, the projected
GPU hours, and each step's growth exponent across rehearsals at several corpus sizes.

Projected GPU hours (the cost model of :func:`densescale.study.config.estimate_gpu_hours`, Kaplan
et al. 2020: ~6 N FLOPs per trained token, ~2 N per encoded token) with its two inputs separated:

- measured here: the corpus size, the training pairs, the mean query and passage lengths in
  tokens (as tokenised for the token caches; batches are padded to their longest member, so the
  mean is a lower bound on the padded length), the passages a dev check encodes;
- assumed (the study's): GPU throughput (H100 bf16 at 40 % of its 989 TFLOP/s peak), the step
  budget of each cell (``steps_for``: cells stop early on patience), one dev check every
  ``train.eval_every`` steps.

Growth (:func:`growth`): per step, over rehearsals at several corpus sizes n, the log-log slope of
its seconds and of its memory on n, and the exponent b of their size-dependent part (y = a + c n^b,
from how the cost per extra passage changes with n: 1 = linear, 2 = quadratic); the projection
to a larger corpus adds the cost per passage measured between the two largest sizes.
"""

from __future__ import annotations

import math

GIB = 1 << 30
# the study's GPU assumption (estimate_gpu_hours): H100 bf16 dense peak x 40 % utilisation
ASSUMED_FLOPS = 0.4 * 989e12
# an exponent up to this counts as linear (the fit over four sizes is noisy at small ones)
LINEAR_UP_TO = 1.15


def project(study, sizes: dict, rows) -> dict:
    """Projected GPU hours of the full study from ``sizes`` (what the rehearsal measured) and the
    study's assumptions; also the host (CPU) seconds of the steps that run once per study."""
    from densescale.models import resolve_model
    from densescale.study.config import estimate_gpu_hours

    cfg = study.train
    lengths = sizes.get("mean_tokens", {})
    tq = min(lengths.get("training queries", cfg.query_max_length), cfg.query_max_length)
    tp = min(lengths.get("corpus passages", cfg.passage_max_length), cfg.passage_max_length)
    corpus = sizes["passages"]
    train_flops = eval_flops = dev_flops = 0.0
    cells = 0
    for cell in study.cells():
        shape = resolve_model(cell.model).shape()
        if shape is None:
            continue
        cells += 1
        n = shape.non_embedding_params(cell.out_dim)
        steps = study.steps_for(cell.data_size)
        per_step = cfg.batch_size * (tq + tp * (1 + cfg.group_negatives)) + cfg.num_negatives * tp
        train_flops += 6 * n * steps * per_step
        eval_flops += 2 * n * (corpus * tp + sizes.get("eval_queries", 0) * tq)
        checks = steps // max(1, cfg.eval_every)
        dev_flops += 2 * n * checks * sizes.get("dev_check_passages", 0) * tp
    hours = lambda f: f / ASSUMED_FLOPS / 3600
    once = {r.name: r.seconds for r in rows}
    return {
        "cells": cells,
        "gpu_hours": hours(train_flops + eval_flops + dev_flops),
        "gpu_hours_train": hours(train_flops),
        "gpu_hours_eval": hours(eval_flops),
        "gpu_hours_dev_checks": hours(dev_flops),
        "gpu_hours_estimate_padded": estimate_gpu_hours(study, corpus_size=corpus),
        "measured": {
            "passages": corpus,
            "train_pairs": sizes.get("train_pairs"),
            "mean_query_tokens": tq,
            "mean_passage_tokens": tp,
            "dev_check_passages": sizes.get("dev_check_passages"),
            "host_seconds_before_first_cell": sum(
                once.get(s, 0.0)
                for s in (
                    "load collection",
                    "dev split + training pairs",
                    "negative pool",
                    "evaluation split",
                    "BM25 reference",
                )
            ),
        },
        "assumed": {
            "flops_per_second": ASSUMED_FLOPS,
            "gpu": "H100 bf16 at 40% of its 989 TFLOP/s peak",
            "steps": "each cell runs its full steps_for(D) budget (patience can stop it earlier)",
            "dev_checks": f"one every train.eval_every = {cfg.eval_every} steps",
        },
    }


def _size(b: float) -> str:
    return f"{b / GIB:.2f} GiB" if b >= GIB / 4 else f"{b / (1 << 20):.0f} MiB"


def format_table(rows, sizes: dict, projection: dict) -> str:
    """The rehearsal table (markdown) and the projection, saying what was measured and assumed."""
    head = (
        f"rehearsal at {sizes['passages']:,} passages, {sizes.get('train_pairs', 0):,} training "
        f"pairs, {sizes.get('eval_queries', 0):,} eval queries ({sizes.get('threads')} torch "
        f"threads, {sizes.get('cpus')} CPUs)\n\n"
        "| step | wall | peak RSS | of it anonymous | RSS growth | disk written | note |\n"
        "|---|---:|---:|---:|---:|---:|---|"
    )
    lines = [head]
    anon = lambda r: _size(r.peak_anon) if r.peak_anon else "-"
    for r in rows:
        lines.append(
            f"| {r.name} | {r.seconds:,.1f} s | {_size(r.peak_rss)} | {anon(r)} | "
            f"{_size(r.rss_growth)} | {_size(r.disk_bytes)} | {r.note} |"
        )
    total = sum(r.seconds for r in rows)
    top = max(rows, key=lambda r: r.peak_anon)
    lines.append(
        f"| total | {total:,.1f} s | {_size(max(r.peak_rss for r in rows))} | {anon(top)} | | | |"
    )
    p, m = projection, projection["measured"]
    lines += [
        "",
        (
            f"projected GPU hours of the real run ({p['cells']} cells): {p['gpu_hours']:,.1f} "
            f"(training {p['gpu_hours_train']:,.1f}, evaluation {p['gpu_hours_eval']:,.1f}, dev "
            f"checks {p['gpu_hours_dev_checks']:,.1f}); the study's own estimate, every sequence "
            f"padded to its maximum length and no dev checks: "
            f"{p['gpu_hours_estimate_padded']:,.1f}"
        ),
        (
            f"  measured: {m['passages']:,} passages, {m['train_pairs'] or 0:,} training pairs, "
            f"mean lengths {m['mean_query_tokens']:.1f} query / {m['mean_passage_tokens']:.1f} "
            f"passage tokens, {m['dev_check_passages'] or 0:,} texts encoded per dev check (pool + dev queries and positives), "
            f"{m['host_seconds_before_first_cell']:,.0f} s of host work before the first cell"
        ),
        "  assumed: "
        + "; ".join(f"{v}" for k, v in p["assumed"].items() if k != "flops_per_second"),
    ]
    return "\n".join(lines)


def _slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y on log x (None with < 2 points or one x)."""
    if len(xs) < 2:
        return None
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-9)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((x - mx) ** 2 for x in lx)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(lx, ly)) / sxx


def _marginals(ns: list[int], ys: list[float]) -> tuple[list[float], list[float]]:
    """Cost per extra passage between consecutive sizes, and where (geometric midpoints)."""
    m = [(ys[i + 1] - ys[i]) / (ns[i + 1] - ns[i]) for i in range(len(ns) - 1)]
    return m, [math.sqrt(ns[i] * ns[i + 1]) for i in range(len(ns) - 1)]


def _growth_exponent(ns: list[int], ys: list[float]) -> float | None:
    """Exponent of the size-dependent part of y = a + c n^b: 1 + the log-log slope of the
    marginal cost dy/dn against n (None when fewer than two marginals are positive, i.e. no
    size-dependent part stands out of the noise)."""
    m, mid = _marginals(ns, ys)
    pts = [(x, v) for x, v in zip(mid, m) if v > 0]
    if len(pts) < 2:
        return None
    slope = _slope([x for x, _ in pts], [v for _, v in pts])
    return None if slope is None else 1 + slope


def growth(results: list[dict], *, target: int = 8_841_823) -> list[dict]:
    """Each step's growth with the corpus over rehearsals at different sizes (``results``:
    rehearsal.json contents), and its projection to ``target`` passages.

    Per step and for both wall seconds and memory (RSS growth over the rehearsal's starting RSS,
    i.e. what the run's data holds at the step's peak): ``*_slope``, the log-log slope of y on n
    (fixed costs, such as the 502,939 training queries whatever the corpus, pull it below 1);
    ``*_exponent``, the exponent b of the size-dependent part of ``y = a + c n^b`` (see
    :func:`_growth_exponent`; 1 = linear, None = no measurable size-dependent part); and the
    projection ``y(n_max) + c_last (target - n_max)`` with ``c_last`` the cost per passage
    between the two largest sizes (``*_per_passage``), the affine model of a linear step.
    Raises ValueError with fewer than two distinct corpus sizes."""
    runs = sorted(results, key=lambda r: r["sizes"]["passages"])
    ns = [r["sizes"]["passages"] for r in runs]
    if len(set(ns)) < 2:
        raise ValueError(f"growth needs rehearsals at >= 2 corpus sizes, got sizes {ns}")
    base = runs[-1]
    start_rss = max(r["peak_rss"] - r["rss_growth"] for r in base["rows"])
    out = []
    for row in base["rows"]:
        name = row["name"]
        pts = [(r["sizes"]["passages"], x) for r in runs for x in r["rows"] if x["name"] == name]
        xs = [n for n, _ in pts]
        secs = [x["seconds"] for _, x in pts]
        mems = [float(x["rss_growth"]) for _, x in pts]
        t_per, m_per = _marginals(xs, secs)[0][-1], _marginals(xs, mems)[0][-1]
        out.append(
            {
                "step": name,
                "sizes": xs,
                "time_slope": _slope(xs, secs),
                "memory_slope": _slope(xs, [max(m, 1 << 20) for m in mems]),
                "time_exponent": _growth_exponent(xs, secs),
                "memory_exponent": _growth_exponent(xs, mems),
                "seconds_per_passage": t_per,
                "bytes_per_passage": m_per,
                "seconds_at_target": secs[-1] + max(t_per, 0.0) * (target - xs[-1]),
                "peak_rss_at_target": start_rss + mems[-1] + max(m_per, 0.0) * (target - xs[-1]),
            }
        )
    return out


def format_growth(rows: list[dict], *, target: int = 8_841_823, memory: int = 24 * GIB) -> str:
    """The growth table (markdown) with a verdict per step for ``target`` passages in ``memory``."""
    sizes = ", ".join(f"{n:,}" for n in rows[0]["sizes"])
    lines = [
        (
            f"growth over corpus sizes {sizes}: log-log slope of y on n, exponent b of the "
            f"size-dependent part of y = a + c n^b (— none measurable), cost per extra passage "
            f"between the two largest sizes, projected to {target:,} passages and "
            f"{memory / GIB:.0f} GiB\n"
        ),
        "| step | time slope | time b | s per 1M passages | memory slope | memory b "
        + "| bytes per passage | time at target | peak RSS at target | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    if len(rows[0]["sizes"]) < 4:  # b needs four points; two or three only give slopes
        lines.insert(1, (
            f"caution: {len(rows[0]['sizes'])} corpus sizes; b needs at least 4, and the "
            "projections extrapolate from the two largest: rehearse at four sizes a decade or "
            "more apart (e.g. 100k, 300k, 1M, 3M) before trusting them\n"
        ))  # fmt: skip
    fmt = lambda b: "—" if b is None else f"{b:.2f}"
    for r in rows:
        tb, mb = r["time_exponent"], r["memory_exponent"]
        # an exponent counts where the size-dependent part matters at the target: over a minute,
        # or over 1 KiB a passage (memory is the whole process's, so small steps inherit noise)
        big_t = r["seconds_per_passage"] * target > 60
        big_m = r["bytes_per_passage"] > 1024
        worst = max((tb or 0) if big_t else 0, (mb or 0) if big_m else 0)
        verdict = "superlinear" if worst > LINEAR_UP_TO else "at most linear"
        verdict += ", fits" if r["peak_rss_at_target"] <= memory else ", DOES NOT FIT"
        lines.append(
            f"| {r['step']} | {fmt(r['time_slope'])} | {fmt(tb)} | "
            f"{r['seconds_per_passage'] * 1e6:,.0f} | {fmt(r['memory_slope'])} | {fmt(mb)} | "
            f"{r['bytes_per_passage']:,.0f} | {r['seconds_at_target'] / 60:,.1f} min | "
            f"{_size(r['peak_rss_at_target'])} | {verdict} |"
        )
    return "\n".join(lines)
