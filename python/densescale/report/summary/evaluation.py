"""``## What the cells were evaluated on``: the evaluated passages and the CE pool against K, and,
where test positives were also training positives, CE and MRR@10 on the clean subset beside
the full split (a model from scratch can score well on positives it was trained towards)."""

from __future__ import annotations

from collections.abc import Mapping

from ..outcomes import SourceFits


def evaluation_section(all_fits: Mapping[str, SourceFits]) -> list[str]:
    cells = [c for f in all_fits.values() for c in f.metrics if c.get("evaluation")]
    evals = [c["evaluation"] for c in cells]
    if not any(e.get("passages") or e.get("overlap_share") is not None for e in evals):
        return []
    lines = ["## What the cells were evaluated on", ""]
    pools = {(e["passages"], e["pool"], e["num_negatives"]) for e in evals if e.get("pool")}
    for passages, pool, k in sorted(pools, key=str):
        text = f"- CE pool: {pool:,.0f} passages"
        if passages:
            text += f" of the {passages:,.0f} evaluated"
        if k:
            text += f", for K = {k:,.0f} negatives per pair"
            if pool < 4 * k:
                text += f" (**under 4 x K**: the negatives are {k / pool:.0%} of the pool)"
        lines.append(text + ".")
    shares = [e["overlap_share"] for e in evals if e.get("overlap_share") is not None]
    if not shares:
        return [*lines, ""]
    share = max(shares)
    if share == 0:
        lines += ["- No evaluated positive is a training positive.", ""]
        return lines
    headline = (
        f"- **{share:.1%} of the evaluated pairs have a positive that is also a training "
        "positive.** The clean subset (queries without one) is evaluated beside the full split; "
        "a large gap means the full-split numbers measure memorisation as much as ranking."
    )
    lines += [
        headline,
        "",
        "| source | model | N | D | CE | CE (clean) | MRR@10 (clean) | clean queries |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        e = c["evaluation"]
        if e.get("clean_ce") is None:
            continue
        mrr = "-" if e.get("clean_mrr") is None else f"{e['clean_mrr']:.3f}"
        lines.append(
            f"| {c['source']} | {c['model']} | {c['N']:,} | {c['D']:,} | {c['ce']:.4f} | "
            f"{e['clean_ce']:.4f} | {mrr} | {e['clean_queries'] or 0:,.0f} |"
        )
    return [*lines, ""]
