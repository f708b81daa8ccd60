"""A model placed on a study's fitted model-size law: its effective N (issue 21, SPEC 7).

The effective N of a model that reaches contrastive entropy ``L`` on a study's collection is the
from-scratch model size that the study's model-size law ``L(N) = (A/N)^alpha + delta`` (at the
study's largest D) needs for the same CE::

    N_eff = A * (L - delta)^(-1/alpha)          (inf when L <= delta: out of reach at any size)

It is given only from a usable law (one that passed the report's checks); otherwise the answer
says which law failed and why, with no number. The interval propagates the model's own CE
interval (``ce +/- z * ce_stderr``) through the law and, when the law carries bootstrap parameter
sets, their spread as well. Reads ``fits.json`` only (no torch).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

_Z95 = 1.959964


@dataclass(frozen=True)
class Placement:
    """The answer: ``N`` and ``interval`` (95%) when ``usable``, else ``reason`` only.

    ``law`` is the law's formula with its constants, ``fixed`` the slice it was fitted at
    (``{"D": ..., "d": ...}``), ``fitted_range`` the smallest and largest N it saw."""

    ce: float
    usable: bool
    reason: str = ""
    N: float | None = None
    interval: tuple[float, float] | None = None
    law: str = ""
    fixed: dict | None = None
    fitted_range: tuple[float, float] | None = None
    source: str = ""

    def describe(self) -> str:
        where = ", ".join(f"{k} = {v:,}" for k, v in (self.fixed or {}).items())
        if not self.usable:
            return f"effective N: not given ({self.reason})"
        if self.N is None or not math.isfinite(self.N):
            return (
                f"effective N: beyond any size: CE {self.ce:.4f} is at or below the law's floor "
                f"({self.law} at {where})"
            )
        lo, hi = self.interval or (math.nan, math.nan)
        text = f"effective N = {self.N:.3g} [{lo:.3g}, {hi:.3g}] on {self.law} at {where}"
        if self.fitted_range:
            a, b = self.fitted_range
            if self.N > b:
                text += f" ({self.N / b:.3g}x beyond the largest fitted N, {b:.3g})"
            elif self.N < a:
                text += f" ({a / self.N:.3g}x below the smallest fitted N, {a:.3g})"
            else:
                text += " (within the fitted range)"
        return text


def _n_for(ce: float, A: float, alpha: float, delta: float) -> float:
    gap = ce - delta
    return A * gap ** (-1.0 / alpha) if gap > 0 else math.inf


def model_size_law_entry(fits: dict, source: str | None = None) -> tuple[str, dict | None, str]:
    """The model-size law of ``fits.json`` a placement uses: the one at the largest fixed D (then
    most points) of ``source`` (default: ``human`` or the only source). Returns
    ``(source, entry or None, why none)``."""
    sources = fits.get("sources") or {}
    if not sources:
        return source or "", None, "fits.json has no fitted source"
    if source is None:
        source = "human" if "human" in sources else next(iter(sources))
    if source not in sources:
        return source, None, f"fits.json has no source {source!r} (it has {sorted(sources)})"
    laws = [e for e in sources[source].get("model_size") or [] if e]
    if not laws:
        return source, None, f"no model-size law was fitted for source {source!r}"
    best = max(laws, key=lambda e: ((e.get("fixed") or {}).get("D", 0), e.get("points", 0)))
    return source, best, ""


def place_on_law(
    fits: dict | str | os.PathLike,
    ce: float,
    ce_stderr: float | None = None,
    *,
    source: str | None = None,
) -> Placement:
    """The effective N of a model with contrastive entropy ``ce`` (standard error ``ce_stderr``)
    on the model-size law at the largest D of ``fits`` (a report's ``fits.json``, path or
    content). See the module docstring; a law that is not usable gives ``usable=False`` and the
    reason."""
    if not isinstance(fits, dict):
        path = Path(fits)
        if not path.is_file():
            raise ValueError(f"fits must be a report's fits.json, got {str(path)!r}")
        fits = json.loads(path.read_text())
    ce = float(ce)
    if not math.isfinite(ce) or ce <= 0:
        raise ValueError(f"ce must be a positive finite number, got {ce!r}")
    source, entry, why = model_size_law_entry(fits, source)
    if entry is None:
        return Placement(ce, False, why, source=source)
    fixed = entry.get("fixed") or {}
    where = ", ".join(f"{k} = {v:,}" for k, v in fixed.items())
    if "params" not in entry:
        reason = entry.get("error") or "no reason recorded"
        return Placement(ce, False, f"the model-size law at {where} was not fitted: {reason}")
    if "usable" not in entry:
        return Placement(
            ce,
            False,
            "this fits.json predates the usability checks (SPEC 7); rerun `densescale report`",
        )
    if not entry["usable"]:
        reason = entry.get("usability") or ", ".join(entry.get("failed_checks") or []) or "?"
        reason = reason.removeprefix("not usable: ")
        return Placement(
            ce,
            False,
            f"the model-size law at {where} is not usable: {reason}",
            fixed=fixed,
            source=source,
        )
    p = entry["params"]
    A, alpha, delta = float(p["A"]), float(p["alpha"]), float(p["delta"])
    n = _n_for(ce, A, alpha, delta)
    se = float(ce_stderr or 0.0)
    candidates = [_n_for(ce + _Z95 * se, A, alpha, delta), _n_for(ce - _Z95 * se, A, alpha, delta)]
    boot = entry.get("bootstrap")
    if boot and len(boot) >= 2:
        import numpy as np

        rows = [_n_for(ce, *map(float, row[:3])) for row in boot]
        finite = np.asarray([r for r in rows if math.isfinite(r)])
        if len(finite):
            candidates += list(np.percentile(finite, [2.5, 97.5]))
    rng = entry.get("fitted_range", {}).get("N")
    return Placement(
        ce=ce,
        usable=True,
        N=n,
        interval=(min(candidates), max(candidates)),
        law=f"L(N) = ({A:.4g}/N)^{alpha:.4g} + {delta:.4g}",
        fixed=fixed,
        fitted_range=tuple(rng) if rng else None,
        source=source,
    )
