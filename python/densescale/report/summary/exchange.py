"""``## Annotation quality: the exchange rate against human pairs``: each source's data-size
constants beside human's, and how many of its pairs reach the CE of D human pairs."""

from __future__ import annotations

import math
from collections.abc import Mapping

from ..exchange import REFERENCE_SOURCE, SourceExchange
from ..outcomes import SourceFits
from . import _format as fmt


def exchange_section(all_fits: Mapping[str, SourceFits], png: str | None) -> list[str]:
    """The exchange rate of every source against human annotations ([] when the study has one
    source; one line when it has no human source)."""
    if len(all_fits) < 2:
        return []
    out = ["## Annotation quality: the exchange rate against human pairs", ""]
    exchanges = {s: f.exchange for s, f in all_fits.items() if f.exchange is not None}
    if REFERENCE_SOURCE not in all_fits:
        return out + [f"No `{REFERENCE_SOURCE}` source in this study: no exchange rate.", ""]
    out += [
        (
            "At one model size N, with the data-size laws `L_H(D) = (B_H/D)^beta_H + delta_H` "
            "(human) and `L_S(D) = (B_S/D)^beta_S + delta_S` (source S), the pairs of S that "
            "reach the CE of D human pairs are `D_S(D) = B_S / (L_H(D) - delta_S)^(1/beta_S)`; "
            "S *never reaches* it where `L_H(D) <= delta_S` (its floor lies above). `D_S / D` "
            "is the exchange rate: above 1, a pair of S is worth less than a human pair. "
            "Intervals: 95% percentiles over the bootstrap draws of both laws. Only usable laws "
            "answer; any other source is one line saying which check failed."
        ),
        "",
    ]
    out += _constants_table(all_fits, exchanges)
    out += _rates_table(exchanges)
    out += _measured_table(exchanges)
    if png:
        out += ["", f"![exchange rate]({png})"]
    return out + [""]


def _constants_table(all_fits, exchanges: Mapping[str, SourceExchange]) -> list[str]:
    """The data-size constants of every source at its exchange slice, human first."""
    lines = [
        "How the data-size constants move with annotation quality:",
        "",
        "| source | slice | B | beta | delta | R^2 |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    rows = []
    ref_done = False
    for s, ex in exchanges.items():
        if not ref_done and ex.reference_outcome is not None:
            rows.append((REFERENCE_SOURCE, ex.where, ex.reference_outcome))
            ref_done = True
        rows.append((s, ex.where, ex.source_outcome))
    for s, where, o in rows:
        if o is None:
            notes.append(f"- {s}: {exchanges[s].note}")
        elif not o.usable:
            notes.append(f"- {s} ({where}): data-size law {o.status}")
        else:
            law = o.law
            lines.append(
                f"| {s} | {where} | {fmt.with_ci(law, 'B')} | {fmt.with_ci(law, 'beta')} "
                f"| {fmt.with_ci(law, 'delta')} | {law.r2:.4f} |"
            )
    if len(lines) == 4:
        lines.append("| (no usable data-size law at a common model size) | | | | | |")
    return lines + ([""] + notes if notes else []) + [""]


def _rates_table(exchanges: Mapping[str, SourceExchange]) -> list[str]:
    answered = {s: ex for s, ex in exchanges.items() if ex.answered}
    lines = []
    if answered:
        lines += [
            "| source | slice | human D | human CE | pairs of the source [95%] | per human pair |",
            "|---|---|---|---|---|---|",
        ]
        for s, ex in answered.items():
            r = ex.quoted
            for i in range(len(r.D)):
                if r.reaches[i]:
                    pairs = _count(r.pairs[i])
                    if r.has_intervals:
                        pairs += f" [{_count(r.lower[i])}, {_count(r.upper[i])}]"
                    pairs += ex.beyond_text(i)
                    rate = f"{r.rate[i]:.3g}x"
                else:
                    pairs = f"never reaches (floor {r.source.delta:.4g})"
                    rate = "-"
                lines.append(
                    f"| {s} | {ex.where} | {r.D[i]:,.0f} | {r.loss[i]:.4f} | {pairs} | {rate} |"
                )
        lines += [""]
        lines += [f"- {s}: {ex.crossings_text()}" for s, ex in answered.items()]
    lines += [f"- {s}: {ex.note}" for s, ex in exchanges.items() if not ex.answered]
    return lines


def _measured_table(exchanges: Mapping[str, SourceExchange]) -> list[str]:
    """The rate read off the cells (no law, inside the measured ranges only), every source."""
    have = {s: ex for s, ex in exchanges.items() if ex.measured is not None}
    lines = [
        "",
        (
            "Measured, with no law: the same rate read off the fitted cells of both sources (CE "
            "made non-increasing in D, joined linearly in log-log), only inside the measured ranges."
        ),
        "",
    ]
    if not have:
        return lines + [f"- {s}: {ex.measured_note}" for s, ex in exchanges.items()]
    lines += [
        "| source | slice | human D | human CE | pairs of the source [95%] | per human pair |",
        "|---|---|---|---|---|---|",
    ]
    for s, ex in have.items():
        m = ex.measured
        lo, hi = m.source_range
        for i in range(len(m.D)):
            if m.status[i] == "reached":
                pairs, rate = m.count_text(i), f"{m.rate[i]:.3g}x"
            elif m.status[i] == "at most":
                pairs, rate = f"<= {lo:,.0f} (its fewest measured)", "-"
            else:
                pairs, rate = f"not reached within {hi:,.0f}", "-"
            lines.append(
                f"| {s} | {ex.where} | {m.D[i]:,.0f} | {m.loss[i]:.4f} | {pairs} | {rate} |"
            )
    lines += [""] + [f"- {s}: {ex.worth_text()}" for s, ex in have.items() if ex.worth is not None]
    lines += [f"- {s}: {ex.measured_note}" for s, ex in exchanges.items() if ex.measured is None]
    notes = sorted({ex.measured.interval_note for ex in have.values()})
    return lines + [f"- Intervals: {n}." for n in notes]


def _count(v: float) -> str:
    if not math.isfinite(v):
        return "inf"
    return f"{v:,.0f}" if v < 1e7 else f"{v:.3g}"
