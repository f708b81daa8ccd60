"""``densescale budget --fits F --price human=1.0 --price ict=0.01 BUDGET``: the best mix of
annotation sources (and N, where a usable joint law of human pairs moves it) for a budget, from
the usable data-size laws of a report (the maths and its modelling assumption:
:mod:`densescale.scaling.source_mix`)."""

from __future__ import annotations

import json
from pathlib import Path

from .budget import _cost_model, _fitted_law, _size_text


def parse_prices(items: list[str]) -> dict[str, float]:
    """``["human=1.0", "ict=0.01"]`` -> {"human": 1.0, "ict": 0.01} (SystemExit naming the bad
    item: no ``=``, not a number, negative, or a source given twice)."""
    prices: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            price = float(value) if sep and name else float("nan")
        except ValueError:
            price = float("nan")
        if not price >= 0 or price == float("inf"):
            raise SystemExit(
                f"error: --price {item!r}: expected SOURCE=DOLLARS_PER_PAIR with a finite "
                "price >= 0, e.g. --price human=1.0"
            )
        if name in prices:
            raise SystemExit(f"error: --price gives source {name!r} twice")
        prices[name] = price
    return prices


def _slice_key(entry: dict) -> tuple:
    fixed = entry.get("fixed") or {}
    return tuple(sorted(fixed.items()))


def _usable_slices(sources: dict, reference: str, prices: dict) -> tuple[dict, dict, str]:
    """(laws, fixed, note) at the slice (N, d) where the reference's data-size law is usable and
    the most priced sources have one too (the largest N among ties); ``note`` says why there is
    none. ``laws`` maps source -> (law or None, why-not line)."""
    from densescale.scaling import DataSizeLaw

    ref_entries = {_slice_key(e): e for e in sources[reference].get("data_size") or []}
    best, best_score = None, None
    for key, entry in ref_entries.items():
        if not entry.get("usable"):
            continue
        score = sum(
            1
            for s in prices
            if s in sources
            and any(
                _slice_key(e) == key and e.get("usable") for e in sources[s].get("data_size") or []
            )
        )
        rank = (score, dict(key).get("N") or 0)
        if best_score is None or rank > best_score:
            best, best_score = key, rank
    if best is None:
        why = [
            _fitted_law(e, f"{reference} data-size law at {_where(dict(k))}")[1]
            for k, e in ref_entries.items()
        ]
        return {}, {}, "; ".join(why) or f"no data-size law of {reference} was fitted"
    laws = {}
    for s in dict.fromkeys([reference, *prices]):
        if s not in sources:
            laws[s] = (None, f"not a source of this fits.json ({', '.join(sorted(sources))})")
            continue
        entry = next((e for e in sources[s].get("data_size") or [] if _slice_key(e) == best), {})
        laws[s] = _fitted_law(entry, f"data-size law at {_where(dict(best))}", DataSizeLaw)
    return laws, dict(best), ""


def _why_not(source: dict) -> str:
    """Why each data-size law of one source is not usable, in one line."""
    from densescale.scaling import DataSizeLaw

    entries = source.get("data_size") or []
    whys = [
        _fitted_law(e, f"data-size law at {_where(dict(_slice_key(e)))}", DataSizeLaw)[1]
        for e in entries
    ]
    return "; ".join(w for w in whys if w) or "no data-size law was fitted"


def _where(fixed: dict) -> str:
    return ", ".join(f"{k} = {v:,}" for k, v in fixed.items())


def _beyond(name: str, factor: float | None) -> str:
    if factor is None or factor <= 1.0 + 1e-9:
        return "within its fitted range"
    return f"{factor:.3g}x outside its fitted range"


def cmd_budget_mix(args) -> int:
    from densescale.scaling.source_mix import optimal_mix

    if not args.fits:
        raise SystemExit(
            "error: --price needs --fits <report>/fits.json (the data-size laws of each source)"
        )
    if args.plot or args.source:
        raise SystemExit(
            "error: --plot and --source answer for one source; with --price every priced "
            "source takes part (drop them)"
        )
    prices = parse_prices(args.price)
    payload = json.loads(Path(args.fits).read_text())
    sources = payload["sources"]
    reference = (payload.get("exchange") or {}).get("reference") or "human"
    if reference not in sources:
        print(f"no mixed-source answer ({args.fits}): no {reference!r} source to exchange against")
        return 1
    unknown = [s for s in prices if s not in sources]
    if unknown:
        raise SystemExit(
            f"error: --price {unknown[0]}=...: {unknown[0]!r} is not a source of {args.fits} "
            f"(its sources: {', '.join(sorted(sources))})"
        )
    laws, fixed, note = _usable_slices(sources, reference, prices)
    if not laws:
        print(f"no mixed-source answer ({args.fits}): {note}")
        for s in prices:
            if s != reference:
                print(f"  {s}: not used: {_why_not(sources[s])}")
        print(
            "  (a law that fails its checks gives no number; more data sizes or seeds, or the "
            "checks' thresholds of `densescale report`, decide whether it passes)"
        )
        return 1
    usable = {s: law for s, (law, _) in laws.items() if law is not None}
    print(
        f"mixed sources: data-size laws at {_where(fixed)} ({args.fits}); the effective "
        f"{reference} data of the pairs bought add (an assumption: "
        "densescale.scaling.source_mix); the prices replace the cost model's "
        "dollars_per_annotation"
    )
    for s, (law, why) in laws.items():
        if law is None:
            print(f"  {s}: not used: {why}")
        else:
            print(
                f"  {s}: {law.describe()}, usable"
                + (f"; ${prices[s]:g}/pair" if s in prices else "")
            )
    bought = {s: p for s, p in prices.items() if s in usable}
    if not bought:
        print("no mixed-source answer: no priced source has a usable data-size law here")
        return 1
    joint, why_joint = _fitted_law(
        sources[reference].get("joint") or {}, f"joint law of {reference}"
    )
    extra = {}
    if joint is not None and "N" in joint.fit.x_range:
        lo, hi = joint.fit.x_range["N"]
        extra = {"joint": joint, "N_bounds": (lo / 10, hi * 1e3)}
    cost = _cost_model(
        args, payload.get("cost_model") or {}, payload.get("cost_model_sources") or {}
    )
    ref_entry = sources[reference]
    yard = ", ".join(
        f"{k} {v:.4g}"
        for k, v in (("chance", ref_entry.get("chance_ce")), ("oracle", ref_entry.get("oracle_ce")))
        if v is not None
    )
    for include in (False, True):
        a = optimal_mix(
            usable,
            bought,
            cost,
            args.budget,
            N=float(fixed["N"]),
            reference=reference,
            include_inference=include,
            **extra,
        )
        head = f"{'with' if include else 'without'} inference cost:"
        if a.N_fixed:
            n_text = f"N = {a.N:,.0f} (fixed: {why_joint or 'no joint law'})"
        else:
            n_text = _size_text("N", a.N, joint.fit.x_range["N"])
        ce = f"{a.loss:.4f}" + (
            f" [{a.interval[0]:.4f}, {a.interval[1]:.4f}]"
            if a.interval is not None
            else " (no interval: a law has no bootstrap)"
        )
        print(f"{head} {n_text}; predicted CE {ce}" + (f" ({yard})" if yard else ""))
        for s, d in a.pairs.items():
            if d <= 0:
                print(f"  {s}: none")
                continue
            print(
                f"  {s}: {d:,.0f} pairs (${a.annotation[s]:,.0f}, {100 * a.shares[s]:.0f}% of "
                f"annotation) ~ {a.effective[s]:,.0f} {reference} pairs; "
                f"{_beyond(s, a.extrapolation.get(s))}"
            )
        print(
            f"  effective {reference} data {a.effective_pairs:,.0f} "
            f"({_beyond(reference, a.extrapolation.get('D_eff'))}); training "
            f"${a.training:,.0f}, inference ${a.inference:,.0f}"
            + (f"; on the search bound ({a.at_bound})" if a.at_bound else "")
        )
    return 0
