"""``### Cells (mean over runs)``: every cell of a source with its yardsticks (chance,
converged, flags), the lexical baselines as reference rows, and a plain sentence for every cell
whose numbers mean nothing (near chance, seen-passage bias) or that the fits left out."""

from __future__ import annotations

from collections.abc import Mapping

from ..outcomes import QUOTED_METRICS, SourceFits
from ..records import NEAR_CHANCE_FRACTION
from . import _format as fmt


def cells_section(fits: SourceFits, baselines: Mapping[str, Mapping]) -> list[str]:
    """The heading, the cells table and the notes under it."""
    out = ["### Cells (mean over runs)", ""]
    out += cells_table(fits, baselines)
    return out + [""] + meaningless_notes(fits)


def cells_table(fits: SourceFits, baselines: Mapping[str, Mapping]) -> list[str]:
    quoted = [m for m in QUOTED_METRICS if any(m in c["metrics"] for c in fits.metrics)]
    quoted += [m for m in QUOTED_METRICS if m not in quoted and _baseline_has(baselines, m)]
    others = sorted(
        {k for c in fits.metrics for k in c["metrics"]} - set(quoted)
    )  # recall@100, map, ...
    metric_names = quoted + others
    head = (
        "| model | checkpoint | N | d | D | runs | CE (nats) | chance |"
        + "".join(f" {fmt.METRIC_TITLES.get(k, k)} |" for k in metric_names)
        + " converged | flags |"
    )
    lines = [head, "|" + "---|" * (10 + len(metric_names))]
    for c in fits.metrics:
        extra = "".join(f" {fmt.metric_cell(c['metrics'].get(k))} |" for k in metric_names)
        conv = {True: "yes", False: "**no**", None: "-"}[c["converged"]]
        flags = ", ".join(c["flags"]) or "-"
        if c["excluded"]:
            flags += " (left out of fits)"
        chance = "-" if c["chance_ce"] is None else f"{c['chance_ce']:.4f}"
        ce = f"{c['ce']:.4f}" + (" **(near chance)**" if c["near_chance"] else "")
        lines.append(
            f"| {c['model']} | {fmt.dash(c['checkpoint'])} | {c['N']:,} | "
            f"{'-' if c['d'] is None else format(c['d'], ',')} | {c['D']:,} | {c['runs']} | "
            f"{ce} | {chance} |{extra} {conv} | {flags} |"
        )
    for label, b in baselines.items():
        metrics = b.get("metrics") or {}
        extra = "".join(f" {fmt.metric_cell(metrics.get(k))} |" for k in metric_names)
        split = b.get("split")
        on = f", {b['corpus']}" if b.get("corpus") else ""
        lines.append(
            f"| **{label}** (reference{', ' + split + ' split' if split else ''}{on}) | - | - | - "
            f"| - | - | - | - |{extra} - | lexical baseline |"
        )
    return lines


def _baseline_has(baselines: Mapping[str, Mapping], metric: str) -> bool:
    return any(metric in (b.get("metrics") or {}) for b in baselines.values())


def meaningless_notes(fits: SourceFits) -> list[str]:
    """A plain sentence for every near-chance cell, and the seen-passage-bias explanation."""
    out = []
    near = [c for c in fits.metrics if c["near_chance"]]
    if near:
        out += ["**Cells whose numbers mean nothing:**", ""]
        for c in near:
            if c["chance_ce"] is not None:
                rel = "worse than" if c["ce"] >= c["chance_ce"] else "at"
                signal = c.get("metrics_signal") or []
                verdict = (
                    f"its CE says nothing, but its {', '.join(signal)} are clearly above a random "
                    "ranking's (3 standard errors): that ranking signal is real. The cell is left "
                    "out of the CE fits."
                    if signal
                    else "this model has not learned to rank. Its ranking metrics are noise, and "
                    "it is left out of every fit."
                )
                out.append(
                    f"- **{c['model']}** ({fmt.cell_where(c)}): CE {c['ce']:.4f} nats against chance "
                    f"ln(K+1) = {c['chance_ce']:.4f}: {rel} chance: {verdict}"
                )
            else:
                out.append(
                    f"- **{c['model']}** ({fmt.cell_where(c)}): flagged near chance by the study: this "
                    "model has not learned to rank. It is left out of every fit."
                )
        out += [
            "",
            (
                f"A cell is near chance when its CE is at least {NEAR_CHANCE_FRACTION} x "
                "ln(K+1), the CE of a scorer that ranks the positive among K random negatives "
                "at random."
            ),
            "",
        ]
    biased = [c for c in fits.metrics if c.get("decides_ranking")]
    if biased:
        out += [
            "**Seen-passage bias decides the ranking:**",
            "",
            (
                "On average, the encoder scores passages that were *training* positives above "
                "the *test* positives it should retrieve: it learned which passages it was "
                "trained to return (e.g. by giving them larger vectors), so its ranking follows "
                "seen / unseen, not relevance. Its metrics measure that memorisation; exclude "
                "every evaluation positive from the training negatives (the default) and check "
                "that train and test topics are disjoint."
            ),
            "",
        ]
        for c in biased:
            b = c["seen_bias"] or {}

            def g(k, spec=".3g", b=b):
                return "?" if k not in b else format(b[k], spec)

            out.append(
                f"- {c['model']} ({fmt.cell_where(c)}): mean score of training-positive passages "
                f"{g('mean_score_seen')}, of never-seen passages {g('mean_score_unseen')}, of "
                f"the test positives {g('mean_score_positive')}; training positives are "
                f"{g('top10_seen_fraction', '.0%')} of the top 10 but "
                f"{g('corpus_seen_fraction', '.1%')} of the corpus."
            )
        out.append("")
    if fits.excluded:
        why = "near-chance cells are never fitted; unconverged cells are " + (
            "fitted (include_unconverged=True)" if fits.include_unconverged else "left out"
        )
        out += [f"**Left out of the law fits** ({why}):", ""]
        out += [f"- {note}" for note in fits.excluded] + [""]
    return out
