"""The exchange rate of every annotation source against human annotations (the study's third
question, SPEC 1.5): how many pairs of a source reach the CE that D human pairs reach, at one
model size, with its bootstrap interval (the maths is :mod:`densescale.scaling.exchange`).

For each source, the model size is the largest N at which both the source and the reference
(``human``) have a usable data-size law (SPEC 7). Without one, :class:`SourceExchange` says in
one line why (which law failed which check, or that no model size has a data-size law of both)
and carries no number. The rate is quoted at the smallest and the largest D the reference law
was fitted on, and drawn over that range.

Beside it, whether or not the laws are usable, the same slice gets the *measured* reading
(:mod:`densescale.scaling.exchange_measured`): the rate read off the fitted cells of both
sources by interpolation, only inside their measured ranges, with an interval over the cells'
test-query noise. It needs no law, so it answers where a law fails its checks (a floor not pinned
down), and it never extrapolates: beyond the measured cells it says "not reached within D_max".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from densescale.scaling import extrapolation
from densescale.scaling.exchange import ExchangeRate, crossings, exchange_rate
from densescale.scaling.exchange_measured import (
    NOT_REACHED,
    MeasuredExchange,
    measured_exchange,
)

from .outcomes import FitOutcome, SourceFits

REFERENCE_SOURCE = "human"
"""The source every other source is exchanged against."""

_CURVE_POINTS = 60


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class SourceExchange:
    """One source against the reference at one model size.

    Attributes:
        source, reference: the two source names.
        fixed: the slice of both data-size laws, e.g. {"N": 36896, "d": 128} ({} when none).
        quoted: the rate at the smallest and largest D of the reference law, or None.
        curve: the rate over the reference law's fitted D range (for the figure), or None.
        crossings: the D (ascending) in the span of both laws' fitted ranges where the two
            curves cross: below and above one, a different source is better (empty: no cross).
        note: "" when there is a rate; otherwise the one line saying why not.
        source_outcome, reference_outcome: the data-size fits used (or the ones whose checks
            failed), None when there is no common slice.
        measured: the rate read off the cells of this slice at every measured reference D (no
            law, no extrapolation), or None; ``worth``: the other reading, the reference pairs
            that reach the CE of the source's largest measured D; ``measured_note``: why there
            is no measured reading ("" when there is one).
    """

    source: str
    reference: str
    fixed: dict = field(default_factory=dict)
    quoted: ExchangeRate | None = None
    curve: ExchangeRate | None = None
    crossings: np.ndarray = field(default_factory=lambda: np.empty(0))
    note: str = ""
    source_outcome: FitOutcome | None = None
    reference_outcome: FitOutcome | None = None
    measured: MeasuredExchange | None = None
    worth: MeasuredExchange | None = None
    measured_note: str = ""

    @property
    def answered(self) -> bool:
        return self.quoted is not None

    @property
    def where(self) -> str:
        return ", ".join(f"{k} = {v:,}" for k, v in self.fixed.items())

    def lines(self) -> list[str]:
        """What a terminal shows: the rate at the two quoted D (with intervals, and how far
        beyond the source's fitted D each answer lies) and the crossings, or the reason."""
        if not self.answered:
            out = [f"effective {self.reference} data from the laws: {self.note}"]
        else:
            out = [f"effective {self.reference} data at {self.where}:"]
            for i in range(len(self.quoted.D)):
                text = self.quoted.text(i, reference=self.reference, source=self.source)
                out.append(f"  {text}{self.beyond_text(i)}")
            out.append(f"  {self.crossings_text()}")
        return out + self.measured_lines()

    def measured_lines(self) -> list[str]:
        """The measured reading: one line per measured reference D (a run of D the source does
        not reach within its cells is one line), then what the source's most pairs are worth."""
        if self.measured is None:
            return [f"measured: {self.measured_note}"] if self.measured_note else []
        m = self.measured
        out = [
            f"measured at {self.where} (read off the cells, no law; interval: {m.interval_note}):"
        ]
        i = 0
        while i < len(m.D):
            j = i
            while (
                m.status[i] == NOT_REACHED and j + 1 < len(m.D) and m.status[j + 1] == NOT_REACHED
            ):
                j += 1
            if j > i:
                out.append(
                    f"  D = {m.D[i]:,.0f} - {m.D[j]:,.0f} {self.reference} pairs (CE "
                    f"{m.loss[i]:.4g} - {m.loss[j]:.4g}): not reached by {self.source} within "
                    f"its {m.source_range[1]:,.0f} measured pairs"
                )
            else:
                out.append("  " + m.text(i, reference=self.reference, source=self.source))
            i = j + 1
        if self.worth is not None:
            out.append("  " + self.worth_text())
        return out

    def worth_text(self) -> str:
        """E.g. "12,000 ict pairs (CE 3.98) are worth ~ 410 [300, 520] human pairs"."""
        w = self.worth
        head = f"{w.D[0]:,.0f} {self.source} pairs (CE {w.loss[0]:.4g}) are worth"
        lo, hi = w.source_range
        if w.status[0] == NOT_REACHED:
            return f"{head} more than the {hi:,.0f} {self.reference} pairs measured"
        if w.status[0] != "reached":
            return f"{head} at most {lo:,.0f} {self.reference} pairs (the fewest measured)"
        return f"{head} ~ {w.count_text(0)} {self.reference} pairs"

    def beyond_text(self, i: int) -> str:
        """E.g. " (extrapolated: 3.1x the largest D fitted for ict, 12,800)" ("" inside)."""
        pairs = float(self.quoted.pairs[i])
        fit = self.quoted.source.fit
        if not np.isfinite(pairs) or fit is None or "D" not in fit.x_range:
            return ""
        lo, hi = fit.x_range["D"]
        factor = extrapolation(pairs, (lo, hi))
        if pairs > hi:
            return (
                f" (extrapolated: {factor:.3g}x the largest D fitted for {self.source}, {hi:,.0f})"
            )
        if pairs < lo:
            return f" (extrapolated: 1/{factor:.3g} of the smallest D fitted for {self.source}, {lo:,.0f})"
        return ""

    def crossings_text(self) -> str:
        if not self.answered:
            return self.note
        if len(self.crossings) == 0:
            lo, hi = self.span
            more = "more" if self.quoted.rate[0] > 1 else "fewer"
            return (
                f"the curves do not cross for D in [{lo:,.0f}, {hi:,.0f}] ({self.source} needs "
                f"{more} pairs than {self.reference} for the same CE throughout)"
            )
        at = ", ".join(f"{v:,.0f}" for v in self.crossings)
        return f"the curves cross at D = {at} (same CE from the same number of pairs)"

    @property
    def span(self) -> tuple[float, float]:
        """The D range searched for crossings: both laws' fitted D ranges together."""
        ranges = [
            law.fit.x_range["D"]
            for law in (self.quoted.reference, self.quoted.source)
            if law.fit is not None and "D" in law.fit.x_range
        ]
        return min(r[0] for r in ranges), max(r[1] for r in ranges)

    def to_json(self) -> dict:
        """For ``fits.json``: ``never reached`` pair counts are null with ``reaches`` false;
        ``measured``: the reading off the cells (pairs null where censored, interval ends 0 for
        "at most the smallest measured D" and null for "not reached within the largest")."""
        out = {"fixed": self.fixed, "answered": self.answered, "note": self.note}
        if self.answered:
            out["quoted"] = _rate_json(self.quoted)
            out["curve"] = _rate_json(self.curve)
            out["crossings"] = [float(v) for v in self.crossings]
        out["measured"] = (
            {"note": self.measured_note}
            if self.measured is None
            else {**_measured_json(self.measured), "worth": _measured_json(self.worth)}
        )
        out["text"] = self.lines()
        return out


def _measured_json(m: MeasuredExchange | None) -> dict | None:
    if m is None:
        return None
    return {
        "D": m.D.tolist(),
        "reference_ce": m.loss.tolist(),
        "pairs": _finite_or_none(m.pairs),
        "rate": _finite_or_none(m.rate),
        "status": list(m.status),
        "lower": _finite_or_none(m.lower),
        "upper": _finite_or_none(m.upper),
        "source_range": list(m.source_range),
        "interval": m.interval_note,
        "redraws": m.n_draws,
        "ci_level": m.ci_level,
    }


def _finite_or_none(x) -> list | None:
    if x is None:
        return None
    return [float(v) if np.isfinite(v) else None for v in np.asarray(x, dtype=float)]


def _rate_json(r: ExchangeRate) -> dict:
    return {
        "D": r.D.tolist(),
        "reference_ce": r.loss.tolist(),
        "pairs": _finite_or_none(r.pairs),
        "rate": _finite_or_none(r.rate),
        "reaches": [bool(v) for v in r.reaches],
        "lower": _finite_or_none(r.lower),
        "upper": _finite_or_none(r.upper),
        "reach_share": _finite_or_none(r.reach_share),
        "ci_level": r.ci_level,
        "bootstrap_pairs": r.n_draws,
    }


def _key(o: FitOutcome) -> tuple:
    return (o.fixed.get("N"), o.fixed.get("d"))


def _pick_slice(reference: SourceFits, fits: SourceFits):
    """(reference outcome, source outcome) at the largest N where both are usable; else the
    common slice with the most points (its reasons are the ones to give); else None."""
    ref = {_key(o): o for o in reference.data_fits}
    src = {_key(o): o for o in fits.data_fits}
    common = [k for k in ref if k in src]
    if not common:
        return None
    both = [k for k in common if ref[k].usable and src[k].usable]
    if both:
        k = max(both, key=lambda k: (k[0] or 0, ref[k].n_points + src[k].n_points))
    else:
        k = max(
            common,
            key=lambda k: (
                ref[k].law is not None and src[k].law is not None,
                min(ref[k].n_points, src[k].n_points),
                k[0] or 0,
            ),
        )
    return ref[k], src[k]


def _reason(name: str, o: FitOutcome) -> str:
    if o.law is None:
        return f"the {name} data-size law was not fitted ({o.error or 'not fitted'})"
    return f"the {name} data-size law is {o.status}"


def _slice_cells(fits: SourceFits, fixed: dict) -> list[dict]:
    """The cells of ``fits`` that entered its fits, at the slice ``fixed`` (N, and d if given)."""
    return sorted(
        (
            c
            for c in fits.metrics
            if not c["excluded"] and all(c.get(k) == v for k, v in fixed.items())
        ),
        key=lambda c: c["D"],
    )


def _measured(reference: SourceFits, fits: SourceFits, fixed: dict, seed: int):
    """(measured, worth, note) of ``fits.source`` against the reference at the slice ``fixed``."""
    ref, src = _slice_cells(reference, fixed), _slice_cells(fits, fixed)
    where = ", ".join(f"{k} = {v:,}" for k, v in fixed.items())
    short = [f"{s.source}: {len(c)}" for s, c in ((reference, ref), (fits, src)) if len(c) < 2]
    if short:
        return None, None, f"no reading at {where}: fewer than 2 fitted cells ({', '.join(short)})"
    errors = [c["ce_stderr"] for c in ref + src]
    with_se = all(e is not None for e in errors)
    seeds = min(c["runs"] for c in ref + src)

    def read(a, b, D=None):
        return measured_exchange(
            [c["D"] for c in a], [c["ce"] for c in a], [c["D"] for c in b], [c["ce"] for c in b],
            D=D, reference_se=[c["ce_stderr"] for c in a] if with_se else None,
            source_se=[c["ce_stderr"] for c in b] if with_se else None, seed=seed, seeds=seeds,
        )  # fmt: skip

    return read(ref, src), read(src, ref, D=[src[-1]["D"]]), ""


def source_exchange(reference: SourceFits, fits: SourceFits, *, seed: int = 0) -> SourceExchange:
    """The exchange rate of ``fits.source`` against ``reference.source`` (see the module
    docstring), or the one-line reason there is none."""
    base = {"source": fits.source, "reference": reference.source}
    picked = _pick_slice(reference, fits)
    if picked is None:
        sizes = {
            s.source: sorted({o.fixed.get("N") for o in s.data_fits if "N" in o.fixed})
            for s in (reference, fits)
        }
        have = "; ".join(
            f"{k}: {', '.join(f'{v:,}' for v in n) or 'none'}" for k, n in sizes.items()
        )
        note = f"no model size with a data-size law of both sources (N of each: {have})"
        return SourceExchange(**base, note=note)
    ref_o, src_o = picked
    fixed = dict(ref_o.fixed)
    base |= dict(
        zip(("measured", "worth", "measured_note"), _measured(reference, fits, fixed, seed))
    )
    if not (ref_o.usable and src_o.usable):
        where = ", ".join(f"{k} = {v:,}" for k, v in fixed.items())
        why = [_reason(n, o) for n, o in ((reference.source, ref_o), (fits.source, src_o))]
        why = [w for w, o in zip(why, (ref_o, src_o)) if not o.usable]
        note = f"no rate at {where}: " + "; ".join(why)
        return SourceExchange(
            **base, fixed=fixed, note=note, source_outcome=src_o, reference_outcome=ref_o
        )
    lo, hi = (float(np.round(v)) for v in ref_o.law.fit.x_range["D"])  # measured pair counts
    quoted = exchange_rate(ref_o.law, src_o.law, [lo, hi], seed=seed)
    curve = exchange_rate(ref_o.law, src_o.law, np.geomspace(lo, hi, _CURVE_POINTS), seed=seed)
    s_lo, s_hi = src_o.law.fit.x_range["D"]
    cross = crossings(ref_o.law, src_o.law, min(lo, s_lo), max(hi, s_hi))
    return SourceExchange(
        **base,
        fixed=fixed,
        quoted=quoted,
        curve=curve,
        crossings=cross,
        source_outcome=src_o,
        reference_outcome=ref_o,
    )


def study_exchange(
    all_fits: Mapping[str, SourceFits], *, reference: str = REFERENCE_SOURCE, seed: int = 0
) -> dict[str, SourceExchange]:
    """source -> :class:`SourceExchange` against ``reference`` for every other source ({} when
    the study has no ``reference`` source)."""
    if reference not in all_fits:
        return {}
    ref = all_fits[reference]
    return {s: source_exchange(ref, f, seed=seed) for s, f in all_fits.items() if s != reference}
