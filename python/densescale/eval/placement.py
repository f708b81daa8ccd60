"""A model placed on a study's fitted law: its effective N (issue 21, SPEC 7).

The effective N of a model that reaches contrastive entropy ``L`` on a study's collection is the
from-scratch model size that the study's law needs for the same CE at the study's largest D.
From the model-size law ``L(N) = (A/N)^alpha + delta`` fitted at that D::

    N_eff = A * (L - delta)^(-1/alpha)                       (inf when L <= delta)

When that law is not usable but the joint law (the paper's form, SPEC 1.4) is, its model-size
slice at the largest D it was fitted on answers instead, and the answer says so::

    N_eff = A * ((L - delta)^(1/beta) - B/D)^(-beta/alpha)   (inf when the bracket is <= 0)

An answer comes only from a usable law (one that passed the report's checks); when neither is
usable the answer says why, with no number. The 95% interval propagates both the law's
uncertainty (its bootstrap parameter sets in ``fits.json``) and the model's own CE uncertainty
(``ce + ce_stderr * z``, z standard normal): N_eff of each (parameter set, CE draw), then the
2.5% and 97.5% quantiles; an upper end of ``inf`` means some draws put the CE out of reach of
any size. Reads ``fits.json`` content only (no torch).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# CE draws per bootstrap parameter set (and in all at least _MIN_DRAWS) for the interval
_MIN_DRAWS = 4000


@dataclass(frozen=True)
class Placement:
    """The answer: ``N`` and ``interval`` (95%) when ``usable``, else ``reason`` only.

    ``law`` is the formula with its constants, ``basis`` which law answered ("model-size law"
    or "model-size slice of the joint law") and ``note`` why the joint slice was used; ``fixed``
    is the slice (``{"D": ..., "d": ...}``), ``fitted_range`` the smallest and largest N the law
    saw, ``name`` the placed model (for labels)."""

    ce: float
    usable: bool
    reason: str = ""
    N: float | None = None
    interval: tuple[float, float] | None = None
    law: str = ""
    fixed: dict | None = None
    fitted_range: tuple[float, float] | None = None
    source: str = ""
    basis: str = ""
    note: str = ""
    name: str = ""

    def describe(self) -> str:
        """One line: the effective N with its interval and the law, or why there is none."""
        where = ", ".join(f"{k} = {v:,}" for k, v in (self.fixed or {}).items())
        if not self.usable:
            return f"effective N: not given ({self.reason})"
        on = f"the {self.basis} {self.law} at {where}"
        if self.N is None or not math.isfinite(self.N):
            return f"effective N: beyond any size: CE {self.ce:.4f} is out of reach of {on}"
        if self.interval is None:
            span = " (no interval: the law has no bootstrap and the CE no standard error)"
        else:
            lo, hi = self.interval
            span = f" [{lo:.3g}, {'inf' if math.isinf(hi) else f'{hi:.3g}'}]"
        text = f"effective N = {self.N:.3g}{span} on {on}"
        if self.fitted_range:
            a, b = self.fitted_range
            if self.N > b:
                text += f" ({self.N / b:.3g}x beyond the largest fitted N, {b:.3g})"
            elif self.N < a:
                text += f" ({a / self.N:.3g}x below the smallest fitted N, {a:.3g})"
            else:
                text += " (within the fitted range)"
        return text + (f"; {self.note}" if self.note else "")


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


def _why_not(entry: dict | None, what: str) -> str:
    """Why the law ``entry`` of fits.json answers nothing ("" when it is usable)."""
    if entry is None:
        return f"no {what} was fitted"
    where = ", ".join(f"{k} = {v:,}" for k, v in (entry.get("fixed") or {}).items())
    label = f"the {what}" + (f" at {where}" if where else "")
    if "params" not in entry:
        return f"{label} was not fitted: {entry.get('error') or 'no reason recorded'}"
    if "usable" not in entry:
        return (
            f"{label}: this fits.json predates the law checks (SPEC 7); rerun `densescale report`"
        )
    if entry["usable"]:
        return ""
    reason = entry.get("usability") or ", ".join(entry.get("failed_checks") or []) or "?"
    return f"{label} is not usable: {reason.removeprefix('not usable: ')}"


def place_on_law(
    fits: dict | str | os.PathLike,
    ce: float,
    ce_stderr: float | None = None,
    *,
    source: str | None = None,
    name: str = "",
) -> Placement:
    """The effective N of a model with contrastive entropy ``ce`` (nats; standard error
    ``ce_stderr``) on the law of ``fits`` (a report's ``fits.json``, path or content) at the
    study's largest D. See the module docstring; when no law is usable the answer has
    ``usable=False`` and the reason. Raises ValueError for a missing file or a ``ce`` that is
    not a positive finite number."""
    if not isinstance(fits, dict):
        path = Path(fits)
        if not path.is_file():
            raise ValueError(f"fits must be a report's fits.json, got {str(path)!r}")
        fits = json.loads(path.read_text())
    ce = float(ce)
    if not math.isfinite(ce) or ce <= 0:
        raise ValueError(f"ce must be a positive finite number, got {ce!r}")
    se = float(ce_stderr or 0.0)
    if not math.isfinite(se) or se < 0:
        raise ValueError(f"ce_stderr must be a finite number >= 0, got {ce_stderr!r}")
    source, entry, why = model_size_law_entry(fits, source)
    if entry is None and not (fits.get("sources") or {}).get(source):
        return Placement(ce, False, why, source=source, name=name)
    model_why = why or _why_not(entry, "model-size law")
    if not model_why:
        return _answer(entry, "model-size law", ce, se, source=source, name=name)
    joint = (fits["sources"][source] or {}).get("joint")
    joint_why = _why_not(joint, "joint law")
    if joint_why:
        return Placement(
            ce, False, f"{model_why}; {joint_why}", fixed=(entry or {}).get("fixed"),
            source=source, name=name,
        )  # fmt: skip
    note = f"used because {model_why}"
    return _answer(joint, "model-size slice of the joint law", ce, se, source, name, note)


def _answer(
    entry: dict, basis: str, ce: float, se: float, source: str, name: str, note: str = ""
) -> Placement:
    """N_eff and its interval from the usable law ``entry`` of fits.json."""
    from densescale.scaling import JointLaw, ModelSizeLaw

    joint = basis != "model-size law"
    cls = JointLaw if joint else ModelSizeLaw
    rng_n = (entry.get("fitted_range") or {}).get("N")
    if joint:
        D = float((entry.get("fitted_range") or {}).get("D", [math.nan, math.nan])[1])
        if not math.isfinite(D):
            return Placement(
                ce, False, "the joint law in fits.json has no fitted range of D", source=source
            )
        D = round(D)  # the fitted range is stored as exp(log D): 12,799.999...
        fixed = {"D": D, **{k: v for k, v in (entry.get("fixed") or {}).items() if k != "D"}}
        formula = f"[(A/N)^(alpha/beta) + B/{D:,}]^beta + delta"
    else:
        D, fixed = None, dict(entry.get("fixed") or {})
        formula = "(A/N)^alpha + delta"

    def n_of(params, target):
        law = cls(**params)
        return law.N_for_loss(target, D) if joint else law.N_for_loss(target)

    params = {k: float(v) for k, v in entry["params"].items() if k in cls.param_names}
    n = float(n_of(params, ce))
    rows = [dict(zip(cls.param_names, map(float, r))) for r in entry.get("bootstrap") or []]
    interval = None
    if rows or se > 0:
        rows = rows or [params]
        per = max(1, -(-_MIN_DRAWS // len(rows)))
        z = np.random.default_rng(0).standard_normal((len(rows), per))
        # a CE draw at or below 0 is no CE: clip to a tiny positive value (N_eff there is inf)
        draws = np.concatenate(
            [
                np.atleast_1d(n_of(r, np.clip(ce + se * z[i], 1e-12, None)))
                for i, r in enumerate(rows)
            ]
        )
        lo, hi = np.quantile(draws, [0.025, 0.975], method="inverted_cdf")
        interval = (float(lo), float(hi))
    shown = ", ".join(f"{k} = {v:.4g}" for k, v in params.items())
    return Placement(
        ce=ce,
        usable=True,
        N=n,
        interval=interval,
        law=f"L(N) = {formula} ({shown})",
        fixed=fixed,
        fitted_range=tuple(rng_n) if rng_n else None,
        source=source,
        basis=basis,
        note=note,
        name=name,
    )
