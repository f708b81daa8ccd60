"""``### Rank agreement of CE and the ranking metrics``: per slice, Kendall's tau of -CE against
MRR@10 / NDCG@10 with the flag, and the R^2 of the CE law beside that of the same law fitted to
1 - metric (:mod:`densescale.report.yardsticks`)."""

from __future__ import annotations

import math

from ..agreement import metric_title
from ..outcomes import SourceFits
from ..yardsticks import METRIC_LAW_TRANSFORM
from . import _format as fmt


def rank_agreement_section(fits: SourceFits) -> list[str]:
    """The table of every slice and metric, then one line per flagged slice ([] without
    yardsticks)."""
    y = fits.yardsticks
    if y is None:
        return []
    out = ["### Rank agreement of CE and the ranking metrics", ""]
    judged = [s for s in y.slices if s.agreements]
    if not judged:
        return out + [
            "No slice has >= 3 fitted cells carrying a ranking metric: nothing to compare.",
            "",
        ]
    o = y.options
    best = " or when the best cell by CE is not the best by the metric" if o.same_best else ""
    out += [
        (
            "Per slice (model sizes at each D, data sizes at each N, over the fitted cells), "
            "Kendall's tau-b of -CE against each ranking metric (1: the same order, 0: "
            "unrelated, -1: reversed) with its two-sided p-value. A slice is flagged (**!!**) "
            f"when tau < {o.min_tau:g}{best}: there the CE law does not say which model ranks "
            "best. Beside it, the R^2 of the slice's CE law and of the same law fitted to "
            f"`{METRIC_LAW_TRANSFORM}` (the metric's error, m = the metric; no bootstrap): the "
            "quantity with the higher R^2 is the one that scales over the slice."
        ),
        "",
        *fmt.table_head(
            "slice | cells | metric | tau | p | best by CE | best by metric | CE law R^2 "
            "| law in 1 - metric: R^2 (exponent) | verdict"
        ),
    ]
    for s in judged:
        for name, a in s.agreements.items():
            law = s.metric_laws.get(name)
            tau = "-" if math.isnan(a.tau) else f"{a.tau:.2f}"
            p = "-" if math.isnan(a.p_value) else f"{a.p_value:.3g}"
            verdict = "agree" if a.agree else "**!! disagree**"
            if a.agree and a.swapped:  # what keeps an agreeing tau below 1
                verdict += f" ({a.swapped_text()})"
            out.append(
                f"| {s.label} | {a.n_cells} | {metric_title(name)} | {tau} | {p} | "
                f"{a.best_by_ce} | {a.best_by_metric} | {_ce_r2(s)} | {_law_r2(law)} | {verdict} |"
            )
    flagged = [s for s in judged if not s.agree]
    if flagged:
        out += [""] + [f"- **!!** {s.describe().removeprefix('!! ')}" for s in flagged]
    else:
        out += [
            "",
            (
                f"CE and the ranking metrics agree on the order of the cells in all "
                f"{len(judged)} slices."
            ),
        ]
    notes = [f"- {s.label}, CE law: {s.ce_note}" for s in judged if s.ce_note]
    notes += [
        f"- {s.label}, {m.quantity}: {m.error or m.caveat}"
        for s in judged
        for m in s.metric_laws.values()
        if m.error or m.caveat
    ]
    return out + ([""] + notes if notes else []) + [""]


def _ce_r2(s) -> str:
    if s.ce_r2 is None:
        return "not fitted"
    return f"{s.ce_r2:.4f}" + (" (not usable)" if s.ce_unusable else "")


def _law_r2(law) -> str:
    if law is None or law.law is None:
        return "not fitted"
    exponent = next((law.law.params[k] for k in ("alpha", "beta") if k in law.law.params), None)
    return f"{law.r2:.4f}" + ("" if exponent is None else f" ({exponent:.3g})")
