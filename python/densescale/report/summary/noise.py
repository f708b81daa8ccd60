"""``### Seed noise against the gaps between sizes``: the seed spread of every cell with two runs
or more, and per slice whether adjacent sizes are further apart than that spread
(:mod:`densescale.report.noise`); with one run per cell, a plain sentence that it is unknown."""

from __future__ import annotations

from ..agreement import metric_title
from ..outcomes import SourceFits
from . import _format as fmt


def seed_noise_section(fits: SourceFits) -> list[str]:
    """The cells' seed spreads and the slices' verdicts ([] without yardsticks)."""
    y = fits.yardsticks
    if y is None:
        return []
    out = ["### Seed noise against the gaps between sizes", ""]
    if not y.spreads:
        return out + ["No fitted cells: no seed spread.", ""]
    if not y.seed_spread_known:
        return out + [
            (
                "Every fitted cell has one run (one seed): **the seed spread is unknown**, so no "
                "gap between adjacent sizes in this report can be told from seed noise (the same "
                "cell trained with another seed or data order can move by more than the gap "
                "between adjacent model sizes). Two seeds or more per cell (`seeds` in the study "
                "grid) measure it."
            ),
            "",
        ]
    factor = y.options.resolve_factor
    times = "" if factor == 1 else f"{factor:g} x "
    out += [
        (
            "Per cell with two runs or more: max - min and standard deviation (ddof 1) over its "
            "runs. Per slice: the median max - min over the slice's multi-run cells (else over "
            "the source's) against the gap between the means of adjacent sizes; a pair is **not "
            f"resolved** when {times}the spread >= the gap: their order, and the law through "
            f"them, is within seed noise. {y.noise_summary()[0].upper()}{y.noise_summary()[1:]}."
        ),
        "",
    ]
    names = [m for m in y.metrics if any(m in s.metric_range for s in y.spreads)]
    head = "| model | N | D | d | runs | CE max - min | CE std |" + "".join(
        f" {metric_title(m)} max - min | {metric_title(m)} std |" for m in names
    )
    out += [head, "|" + "---|" * (7 + 2 * len(names))]
    single = 0
    for s in y.spreads:
        if s.runs < 2:
            single += 1
            continue
        row = (
            f"| {s.model} | {s.N:,} | {s.D:,} | {fmt.dash(s.d)} | {s.runs} | {s.ce_range:.4f} "
            f"| {s.ce_std:.4f} |"
        )
        for m in names:
            row += f" {_num(s.metric_range.get(m))} | {_num(s.metric_std.get(m))} |"
        out.append(row)
    if single:
        out += ["", f"{single} fitted cell(s) have one run (no spread of their own)."]
    judged = [s for s in y.slices if s.resolutions]
    if judged:
        out += [""] + fmt.table_head(
            "slice | quantity | seed spread (median max - min) | smallest adjacent gap | "
            "pairs not resolved | verdict"
        )
        for s in judged:
            for q, r in s.resolutions.items():
                title = "CE (nats)" if q == "ce" else metric_title(q)
                verdict = "resolved" if r.resolved else f"**!! {r.describe()}**"
                out.append(
                    f"| {s.label} | {title} | {r.spread:.4g} ({r.spread_from}) | "
                    f"{r.smallest_gap:.4g} | {len(r.unresolved)} of {len(r.pairs)} | {verdict} |"
                )
    return out + [""]


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"
