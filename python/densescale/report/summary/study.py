"""The study-wide sections of ``summary.md``: the title and ``overview`` table, ``## From
contrastive entropy to ranking metrics``, ``## Training curves``, ``## Annotation sources
compared`` and ``## Cost model of the budget answers``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields

from densescale.scaling import CostModel

from ..outcomes import SourceFits
from . import _format as fmt


def overview(all_fits: Mapping[str, SourceFits], generated: str, n_records: int) -> list[str]:
    """``# Dense retrieval scaling-law report``: what the numbers are, and one row per source."""
    lines = [
        "# Dense retrieval scaling-law report",
        "",
        (
            f"Generated {generated} from {n_records} result records; loss = contrastive "
            "entropy (CE, nats) on the test pairs; N = non-embedding parameters; D = annotated "
            "(query, passage) pairs; d = embedding dimension. Fits: Huber loss on log CE, "
            "L-BFGS-B from a grid of starts (`densescale.scaling`). Machine-readable values: "
            "[fits.json](fits.json)."
        ),
        "",
        "| source | cells | left out | runs | model sizes N | data sizes D | CE range (nats) | chance |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s, f in all_fits.items():
        cells = f.metrics
        ces = [c["ce"] for c in cells]
        ns = sorted({c["N"] for c in cells})
        ds = sorted({c["D"] for c in cells})
        chance = "-" if f.chance_ce is None else f"{f.chance_ce:.4f}"
        lines.append(
            f"| {s} | {len(cells)} | {len(f.excluded)} | {sum(c['runs'] for c in cells)} | "
            f"{len(ns)} ({fmt.num(ns[0])} - {fmt.num(ns[-1])}) | {len(ds)} ({fmt.num(ds[0])} - "
            f"{fmt.num(ds[-1])}) | {min(ces):.4f} - {max(ces):.4f} | {chance} |"
        )
    return lines + [""]


def metric_maps_section(fits: SourceFits, png: str | None) -> list[str]:
    """The CE-to-metric map of every ranking metric (the maps are shared by all sources)."""
    maps = fits.metric_maps
    out = ["## From contrastive entropy to ranking metrics", ""]
    if not maps:
        return out + ["No ranking metrics in the records (or fewer than 3 cells): no map.", ""]
    out += [
        (
            "Every cell of the study (every source, fitted or left out), each ranking metric "
            "against its CE, with a monotone map fitted over them: a two-parameter logistic "
            "`m = 1 / (1 + exp(b (CE - c)))` or an isotonic (non-increasing) fit, whichever has "
            "the smaller leave-one-out error (the logistic unless the isotonic is clearly "
            "better), with a pairs-bootstrap band. Every CE below is also given through these "
            "maps."
        ),
        "",
        "| metric | form | c | b | RMSE | leave-one-out RMSE (logistic / isotonic) | cells |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in maps.items():
        c = fmt.num(m.params["c"]) if m.kind == "logistic" else "-"
        b = fmt.num(m.params["b"]) if m.kind == "logistic" else "-"
        loo = f"{m.loo_rmse['logistic']:.4f} / {m.loo_rmse['isotonic']:.4f}" if m.loo_rmse else "-"
        out.append(f"| {name} | {m.kind} | {c} | {b} | {m.rmse:.4f} | {loo} | {len(m.ce)} |")
    if png:
        out += ["", f"![ranking metrics against CE]({png})"]
    return out + [""]


def training_curves_section(png: str | None) -> list[str]:
    return ["## Training curves", "", f"![training curves]({png})", ""] if png else []


def sources_section(
    all_fits: Mapping[str, SourceFits], png: str | None, common_d: int | None
) -> list[str]:
    """The joint exponents and floor of every source side by side, with the figure ([] without
    the figure, i.e. with one source)."""
    if png is None:
        return []
    at = f" at D = {common_d:,}" if common_d is not None else " at each source's largest D"
    lines = [
        "## Annotation sources compared",
        "",
        f"CE against N for every source{at}; lower curves mean better annotations.",
        "",
        "| source | alpha (joint) | beta (joint) | delta (joint) |",
        "|---|---|---|---|",
    ]
    for s, f in all_fits.items():
        if not f.joint.usable:
            lines.append(f"| {s} | joint law {f.joint.status} | | |")
        else:
            law = f.joint.law
            lines.append(
                f"| {s} | {fmt.with_ci(law, 'alpha')} | {fmt.with_ci(law, 'beta')} "
                f"| {fmt.with_ci(law, 'delta')} |"
            )
    return lines + ["", f"![sources]({png})", ""]


def cost_model_section(cost: CostModel, sources: Mapping[str, str] | None = None) -> list[str]:
    """Every parameter of the cost model, where its value came from, and the formula the budget
    answers used (``sources``: parameter -> origin, e.g. the records' corpus size; the rest are
    the documented defaults of :class:`~densescale.scaling.CostModel`)."""
    sources = dict(sources or {})
    given = sources.pop("all", None)
    lines = [
        "## Cost model of the budget answers",
        "",
        "| parameter | value | from |",
        "|---|---|---|",
    ]
    for f in fields(cost):
        origin = given or sources.get(f.name, "default assumption (`CostModel`)")
        lines.append(f"| {f.name} | {getattr(cost, f.name)} | {origin} |")
    return lines + [
        "",
        (
            "Training FLOPs = 6 N x tokens seen, inference FLOPs = 2 N x (corpus tokens + query "
            "tokens); dollars = FLOPs / achieved FLOP/s / 3600 x accelerator $/hour "
            "(`densescale.scaling.CostModel`)."
        ),
        "",
    ]
