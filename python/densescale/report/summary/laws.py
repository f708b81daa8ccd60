"""The law sections of a source: ``### Model-size law``, ``### Data-size law``, ``### Joint laws``,
``### Embedding-dimension law`` and ``### Irreducible loss``: the fitted constants with their
intervals, R^2 and forecast check, each table followed by its figure."""

from __future__ import annotations

import numpy as np

from densescale.scaling import ChinchillaLaw, JointLaw

from ..outcomes import SourceFits
from . import _format as fmt
from .budget import memory_answer


def _at_d(fits: SourceFits) -> str:
    """ " (at d = 768)" when the N-D laws were fitted at one known embedding dimension."""
    known_d = fits.dims is not None and bool(np.any(np.isfinite(fits.dims)))
    return f" (at d = {fits.main_dim:,})" if fits.main_dim is not None and known_d else ""


def _slice_keys(fits: SourceFits, key: str) -> tuple[str, ...]:
    """The coordinates that name a slice: ``key``, and d when the records give it."""
    known_d = fits.dims is not None and bool(np.any(np.isfinite(fits.dims)))
    return (key, "d") if known_d else (key,)


def model_size_section(fits: SourceFits, files: dict) -> list[str]:
    out = [f"### Model-size law `L(N) = (A/N)^alpha + delta`, per D{_at_d(fits)}", ""]
    out += fmt.law_table(fits.model_fits, _slice_keys(fits, "D"), ("A", "alpha", "delta"))
    return out + ["", f"![loss vs model size]({files['loss_vs_N']})", ""]


def data_size_section(fits: SourceFits, files: dict) -> list[str]:
    out = [f"### Data-size law `L(D) = (B/D)^beta + delta`, per N{_at_d(fits)}", ""]
    out += fmt.law_table(fits.data_fits, _slice_keys(fits, "N"), ("B", "beta", "delta"))
    return out + ["", f"![loss vs annotations]({files['loss_vs_D']})", ""]


def joint_section(fits: SourceFits, files: dict) -> list[str]:
    """Both forms of L(N, D), the cells they left out, and the residuals figure."""
    out = [f"### Joint laws{_at_d(fits)}", ""]
    out += fmt.form_table(
        [
            (fits.joint, JointLaw.formula, JointLaw.formula),
            (fits.chinchilla, ChinchillaLaw.formula, ChinchillaLaw.formula),
        ],
        ("A", "B", "alpha", "beta", "delta"),
    )
    if fits.joint.excluded:
        out += ["", f"- {fits.joint.excluded_line()}"]
    return out + ["", f"![residuals]({files['residuals']})", ""]


def dimension_section(fits: SourceFits, files: dict) -> list[str]:
    """L(d) per (N, D), the joint L(N, d), its figure and the serving-memory answer ([] when the
    study does not vary d)."""
    if not fits.dim_fits and fits.model_dim is None:
        return []
    out = ["### Embedding-dimension law `L(d) = (C/d)^gamma + delta`, per (N, D)", ""]
    out += fmt.law_table(fits.dim_fits, ("N", "D"), ("C", "gamma", "delta"))
    o = fits.model_dim
    if o is not None:
        formula = None if o.law is None else o.law.formula
        out += ["", f"Joint law of model size and dimension at D = {o.fixed.get('D', 0):,}:", ""]
        out += fmt.form_table([(o, formula, "L(N, d)")], ("A", "C", "alpha", "gamma", "delta"))
    if "loss_vs_dim" in files:
        out += ["", f"![loss vs embedding dimension]({files['loss_vs_dim']})"]
    return out + memory_answer(fits) + [""]


def irreducible_section(fits: SourceFits, oracle: float | None) -> list[str]:
    """The fitted floors (joint law, model-size law at the largest D) against the oracle CE."""
    out = ["### Irreducible loss", ""]
    rows = []
    if fits.joint.usable:
        rows.append(("joint law (paper form)", fits.joint.law))
    largest = fmt.headline(fits.model_fits, "D")
    if largest is not None:
        rows.append((largest.label, largest.law))
    if not rows:
        out.append("No usable law with an irreducible term (see the law tables for why).")
    else:
        head = "| law | delta (nats) |" + (" oracle CE (nats) | delta - oracle |" if oracle else "")
        out += [head, "|---|---|" + ("---|---|" if oracle else "")]
        for label, law in rows:
            line = f"| {label} | {fmt.with_ci(law, 'delta')} |"
            if oracle:
                line += f" {oracle:.4f} | {law.delta - oracle:+.4f} |"
            out.append(line)
        if oracle:
            out += [
                "",
                (
                    "The oracle contrastive entropy is the loss of the Bayes-optimal scorer under "
                    "the collection's known generative model: no encoder can go below it, so a "
                    "fitted delta near it means the law's floor is the data's own noise, and a "
                    "delta far below it means the measured range does not reach the floor yet."
                ),
            ]
    return out + [""]
