"""``densescale budget``: a budget answer from the paper's law or a report's usable joint law."""

from __future__ import annotations

import json
from pathlib import Path

_PAPER_JOINT = {"A": 3.6e4, "B": 7.1e3, "alpha": 0.56, "beta": 1.31, "delta": 0.03}
_PAPER_RANGE = {"N": (512_128.0, 86_235_648.0), "D": (None, 532_761.0)}


def _fitted_law(entry: dict, name: str, cls=None):
    """A joint law of fits.json (or a law of class ``cls``) with what its answers need
    (bootstrap, fitted range), or None and the one line saying why it may not answer (SPEC 7)."""
    import numpy as np

    from densescale.scaling import ChinchillaLaw, FitInfo, JointLaw

    if not entry:
        return None, f"the {name} was not attempted"
    if "params" not in entry:
        return None, f"the {name} was not fitted: {entry.get('error') or 'no reason recorded'}"
    if "usable" not in entry:
        return None, (
            f"the {name} in this fits.json predates the usability checks (SPEC 7); rerun "
            "`densescale report` to judge it"
        )
    if not entry["usable"]:
        return None, f"the {name} is {entry.get('usability', 'not usable')}"
    if cls is None:
        cls = JointLaw if entry.get("kind", "joint") == "joint" else ChinchillaLaw
    boot = entry.get("bootstrap")
    info = FitInfo(
        r2=float(entry.get("r2") or float("nan")),
        residuals=np.empty(0),
        log_residuals=np.empty(0),
        ci={k: tuple(v) for k, v in (entry.get("ci") or {}).items()},
        ci_level=float(entry.get("ci_level", 0.95)),
        n_points=int(entry.get("points", 0)),
        n_boot=0 if boot is None else len(boot),
        objective=float("nan"),
        huber_delta=float("nan"),
        bootstrap=None if not boot else np.asarray(boot, dtype=float),
        x_range={k: tuple(v) for k, v in (entry.get("fitted_range") or {}).items()},
    )
    return cls(**entry["params"]).with_fit(info), ""


def _size_text(axis: str, value: float, fitted: tuple) -> str:
    """ "N = 2.5e+10 (290x beyond the largest fitted, 8.62e+07)" and the like; ``fitted`` is
    (smallest, largest), the smallest None when unknown."""
    lo, hi = fitted
    text = f"{axis} = {value:.3g}"
    if value > hi:
        return text + f" ({value / hi:.3g}x beyond the largest fitted, {hi:.3g})"
    if lo is None:
        return text + f" (not beyond the largest fitted, {hi:.3g})"
    if value < lo:
        return text + f" ({lo / value:.3g}x below the smallest fitted, {lo:.3g})"
    return text + " (within the fitted range)"


def _cost_model(args, cost_defaults: dict, origins: dict):
    """The :class:`CostModel` of fits.json's ``cost_model`` with the command line's overrides;
    prints the line saying where the corpus size and the served queries come from."""
    from dataclasses import fields

    from densescale.scaling import CostModel

    known = {f.name for f in fields(CostModel)}
    values = {k: v for k, v in cost_defaults.items() if k in known and v is not None}
    for f in fields(CostModel):
        if getattr(args, f.name, None) is not None:
            values[f.name] = getattr(args, f.name)
            origins[f.name] = "given on the command line"
    cost = CostModel(**values)
    corpus_from = (
        origins.get("corpus_size")
        or origins.get("all")
        or ("default: MS MARCO size; set --corpus-size for your collection")
    )
    queries_from = origins.get("queries_served") or "assumption"
    if queries_from.startswith("assumption"):
        queries_from += "; set --queries-served"
    print(
        f"cost model: corpus_size = {cost.corpus_size:,.0f} passages ({corpus_from}); "
        f"queries_served = {cost.queries_served:.3g} ({queries_from})"
    )
    return cost


def cmd_budget(args) -> int:
    from densescale.report import plot_budget
    from densescale.scaling import JointLaw, optimal_allocation

    if getattr(args, "price", None):
        from .budget_mix import cmd_budget_mix

        return cmd_budget_mix(args)
    cost_defaults, origins, box = {}, {}, {}
    if args.fits:
        payload = json.loads(Path(args.fits).read_text())
        sources = payload["sources"]
        source = args.source or next(iter(sources))
        if source not in sources:
            raise SystemExit(f"error: --source {source!r} not in {sorted(sources)}")
        entry = sources[source]
        law, why = _fitted_law(entry.get("joint") or {}, "joint law (paper form)")
        if law is None:
            additive, why_additive = _fitted_law(
                entry.get("chinchilla") or {}, "additive joint law"
            )
            if additive is None:
                if "params" in (entry.get("chinchilla") or {}):
                    why += f"; {why_additive}"
                print(f"no budget answer for source {source!r} ({args.fits}): {why}")
                return 1
            law = additive
        ranges = dict(law.fit.x_range)
        print(f"law: the joint law fitted on source {source!r} ({args.fits}), usable")
        print(f"  {law.describe()}")
        cost_defaults = payload.get("cost_model") or {}
        origins = payload.get("cost_model_sources") or {}
        if ranges:  # search where the report searched: a decade below, three above the data
            box = {
                "N_bounds": (ranges["N"][0] / 10, ranges["N"][1] * 1e3),
                "D_bounds": (ranges["D"][0] / 10, ranges["D"][1] * 1e3),
            }
    else:
        law = JointLaw(**_PAPER_JOINT)
        ranges = _PAPER_RANGE
        print(
            "law: the paper's published MS MARCO joint law (SPEC 1.4; Fang et al., SIGIR 2024), "
            "NOT fitted on your data; pass --fits <report>/fits.json to use your own"
        )
        print(f"  {law.describe()}")
        print(
            "  fitted on N = 5.12e+05 - 8.62e+07 (BERT-Tiny to BERT-Base) and D up to 5.33e+05 "
            "(the MS MARCO training qrels); its answers below say how far they extrapolate"
        )
    print(
        "  "
        + (
            "no parameter intervals (published constants)"
            if not law.ci
            else "95% intervals: "
            + ", ".join(f"{k} [{lo:.3g}, {hi:.3g}]" for k, (lo, hi) in law.ci.items())
        )
    )
    cost = _cost_model(args, cost_defaults, origins)
    for include in (False, True):
        a = optimal_allocation(law, cost, args.budget, include_inference=include, **box)
        band = law.interval(a.N, a.D)
        ce = f"{a.loss:.4f}" + (
            f" [{float(band[0]):.4f}, {float(band[1]):.4f}]"
            if band is not None
            else " (no interval: the law has no bootstrap)"
        )
        print(
            f"{'with' if include else 'without'} inference cost: "
            f"{_size_text('N', a.N, ranges['N'])}, {_size_text('D', a.D, ranges['D'])}, "
            f"predicted CE {ce}; annotation ${a.cost.annotation:,.0f}, "
            f"training ${a.cost.training:,.0f}, inference ${a.cost.inference:,.0f}"
            + (f"; on the search bound ({a.at_bound})" if a.at_bound else "")
        )
    if args.plot:
        plot_budget(
            law, cost, args.budget, args.plot, include_inference=not args.no_inference, **box
        )
        print(f"plot: {args.plot}")
    return 0
