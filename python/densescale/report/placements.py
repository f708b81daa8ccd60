"""Models placed on a study's laws in its report (issue 21): ``densescale report --place REC``.

A placed model is an evaluation record of ``densescale eval`` (a study cell, a run, or any
sentence-transformers model zero-shot) with its CE. :func:`place_in_study` answers its effective
N on each source's law (:mod:`densescale.eval.placement`) when the record was evaluated as the
study's cells were (same split, same K, same queries and passages: the CE level depends on all
of them); otherwise the placement says which setting differs, with no number.
:func:`placements_markdown` is the report's section; the marked point on the loss-vs-N figure
is drawn by :func:`densescale.report.figures.plot_loss_vs_n`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .fits_json import _law_json
from .outcomes import SourceFits

if TYPE_CHECKING:  # densescale.eval imports torch; the report must not (tests/test_report_layout)
    from densescale.eval.placement import Placement

# what a placed record must share with the study's cells for its CE to be on their scale
_SAME = (
    ("split", "split"),
    ("num_negatives", "K random negatives"),
    ("num_queries", "queries"),
    ("num_passages", "passages"),
)


def read_placed(paths: Sequence[str | os.PathLike]) -> list[dict]:
    """The evaluation records at ``paths`` (JSON written by ``densescale eval``). Raises
    ValueError naming the path when one is missing, unreadable or has no ``ce``."""
    out = []
    for p in paths:
        path = Path(p)
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"--place {str(path)!r} is not a readable JSON record: {e}") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("ce"), (int, float)):
            raise ValueError(  # noqa: TRY004 - a bad file is a value error, as the rest here
                f"--place {str(path)!r} must be an evaluation record of `densescale eval` "
                "(a JSON object with its contrastive entropy `ce`)"
            )
        out.append(rec)
    return out


def _label(rec: Mapping) -> str:
    """A short name: a hub id as it is, a folder by its name (its parent's when the folder is
    only called "model", as a packaged model's often is)."""
    name = str(rec.get("model") or "model")
    path = Path(name)
    if path.is_absolute() or path.exists():
        name = path.parent.name if path.name in ("model", "models") else path.name
    return name if len(name) <= 40 else "..." + name[-37:]


def evaluation_mismatch(rec: Mapping, cells: Sequence[Mapping]) -> str:
    """Which evaluation setting of ``rec`` differs from every cell's ("" when none does)."""
    for key, what in _SAME:
        seen = {c.get(key) for c in cells if c.get(key) is not None}
        if rec.get(key) is not None and seen and rec[key] not in seen:
            theirs = ", ".join(f"{v:,}" if isinstance(v, int) else str(v) for v in sorted(seen))
            mine = f"{rec[key]:,}" if isinstance(rec[key], int) else str(rec[key])
            return (
                f"evaluated with {what} = {mine}, the study's cells with {theirs}: their CEs are "
                "not on one scale (evaluate with `densescale eval --config <the study's file>`)"
            )
    return ""


def place_in_study(
    placed: Sequence[Mapping], all_fits: Mapping[str, SourceFits], records: Sequence[Mapping]
) -> dict[str, list[Placement]]:
    """Source -> one :class:`~densescale.eval.placement.Placement` per placed record, on that
    source's usable law (the model-size law at the largest D, else the joint law's slice
    there), or with the one-line reason there is none."""
    if not placed:
        return {s: [] for s in all_fits}
    from densescale.eval.placement import Placement, place_on_law

    out: dict[str, list[Placement]] = {}
    for source, f in all_fits.items():
        cells = [r for r in records if r.get("source") == source]
        laws = {
            "model_size": [_law_json(o, bootstrap=True) for o in f.model_fits],
            "joint": _law_json(f.joint, bootstrap=True),
        }
        answers = []
        for rec in placed:
            why = evaluation_mismatch(rec, cells)
            if why:
                answers.append(
                    Placement(float(rec["ce"]), False, why, source=source, name=_label(rec))
                )
                continue
            answers.append(
                place_on_law(
                    {"sources": {source: laws}},
                    rec["ce"],
                    rec.get("ce_stderr"),
                    source=source,
                    name=_label(rec),
                )
            )
        out[source] = answers
    return out


def place_record(rec: Mapping, fits_path: str | os.PathLike) -> Placement:
    """``densescale eval --fits``: the evaluation record ``rec`` placed on the laws of a report's
    ``fits.json``. When the study's ``results.jsonl`` sits where a study keeps it
    (``<study>/report/fits.json`` -> ``<study>/results.jsonl``), a record evaluated unlike the
    study's cells is not placed (the reason says which setting differs)."""
    from densescale.eval.placement import Placement, place_on_law

    fits_path = Path(fits_path)
    results = fits_path.parent.parent / "results.jsonl"
    if results.is_file():
        from densescale.study.store import ResultsStore

        why = evaluation_mismatch(rec, ResultsStore(results).records())
        if why:
            return Placement(float(rec["ce"]), False, why, name=_label(rec))
    return place_on_law(fits_path, rec["ce"], rec.get("ce_stderr"), name=_label(rec))


def placements_markdown(placements: Mapping[str, Sequence[Placement]]) -> str:
    """The report section: one line per placed model and source ("" when none was placed)."""
    rows = [(s, p) for s, ps in placements.items() for p in ps]
    if not rows:
        return ""
    lines = [
        "",
        "## Placed models: effective N",
        "",
        (
            "The from-scratch model size the study's law needs to reach each placed model's CE "
            "at the study's largest D (95% interval from the law's bootstrap and the CE's "
            "standard error); given only from a usable law (SPEC 7)."
        ),
        "",
    ]
    lines += [f"- `{p.name}` ({s}, CE {p.ce:.4f}): {p.describe()}" for s, p in rows]
    return "\n".join(lines) + "\n"
