"""The budget answers: ``### Budget`` (the best (N, D) for a dollar budget, with and without
inference cost) and, inside the embedding-dimension section, the best (N, d) for a serving-memory
budget. Each predicted CE carries its bootstrap band and its value in the quoted metrics."""

from __future__ import annotations

from ..outcomes import SourceFits
from . import _format as fmt


def budget_section(fits: SourceFits, files: dict) -> list[str]:
    out = ["### Budget", ""]
    if fits.allocation is None:
        return out + [fits.budget_note or "No budget answer.", ""]
    law_name = "joint law (paper form)" if fits.joint.usable else "additive joint law"
    law = fits.budget_law
    (n_lo, n_hi), (d_lo, d_hi) = fits.search_box["N_bounds"], fits.search_box["D_bounds"]
    out += [
        f"Minimise the {law_name} subject to cost <= ${fits.budget:,.2f}"
        + (f" ({fits.budget_note})" if fits.budget_note else "")
        + f"; N searched in [{fmt.num(n_lo)}, {fmt.num(n_hi)}], D in "
        f"[{fmt.num(d_lo)}, {fmt.num(d_hi)}].",
        "",
        (
            "| | N | D | predicted CE [95%] | annotation $ | training $ | inference $ | "
            "total $ | on search bound | beyond the fitted sizes |" + fmt.metric_heads(fits)
        ),
        "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(fmt.quoted(fits)),
    ]
    for label, x in (
        ("with inference cost", fits.allocation),
        ("without inference cost", fits.allocation_no_inference),
    ):
        lo, hi = fmt.band(law, x.N, x.D)
        out.append(
            f"| {label} | {x.N:.3g} | {x.D:.3g} | {fmt.interval(x.loss, lo, hi)} "
            f"| {x.cost.annotation:,.2f} | {x.cost.training:,.2f} | {x.cost.inference:,.2f} "
            f"| {x.cost.total:,.2f} | {x.at_bound or 'no'} "
            f"| {fits.extrapolation_line(law, N=x.N, D=x.D)} |"
            + fmt.in_metrics(fits, x.loss, lo, hi)
        )
    if law.fit is None or law.fit.bootstrap is None:
        out += ["", "The law has no bootstrap, so the predicted CE has no interval."]
    return out + ["", f"![budget]({files['budget']})", ""]


def memory_answer(fits: SourceFits) -> list[str]:
    """The (N, d) answer of the joint L(N, d) under the serving-memory budget, or the note that
    says why there is none ([] when neither)."""
    b = fits.allocation_dim
    if b is None:
        return ["", fits.memory_note] if fits.memory_note else []
    lo, hi = fmt.band(fits.model_dim.law, b.N, b.d)
    return [
        "",
        (
            f"Under a serving-memory budget of {b.memory_budget / 1e9:.4g} GB (index "
            "= corpus_size x d x bytes_per_value, plus the encoder's N x bytes_per_param"
            + (f"; {fits.memory_note}" if fits.memory_note else "")
            + "), the law's best trade of d against N:"
        ),
        "",
        (
            "| N | d | predicted CE [95%] | memory (GB) | on search bound | beyond the fitted "
            "sizes |" + fmt.metric_heads(fits)
        ),
        "|---|---|---|---|---|---|" + "---|" * len(fmt.quoted(fits)),
        f"| {b.N:.3g} | {b.d:.0f} | {fmt.interval(b.loss, lo, hi)} | {b.memory_bytes / 1e9:.4g} "
        f"| {b.at_bound or 'no'} | {fits.extrapolation_line(fits.model_dim.law, N=b.N, d=b.d)} |"
        + fmt.in_metrics(fits, b.loss, lo, hi),
    ]
