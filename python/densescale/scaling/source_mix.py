"""A budget spent on a mix of annotation sources (SPEC 1.5 with 1.6): which pairs of which source
to buy, and which model size N, to minimise the predicted CE.

**Modelling assumption (ours; the study measures no mixed cell).** Each source S has a usable
data-size law at the same model size N0, ``L_S(D) = (B_S / D)^beta_S + delta_S``, and so does
the reference source R (human qrels). D_S pairs of S are worth the reference pairs that reach the
same CE (:func:`densescale.scaling.effective_data`, "effective data" in the sense of Hernandez et
al., *Scaling Laws for Transfer*, 2021):

    h_S(D_S) = B_R / (L_S(D_S) - delta_R)^(1 / beta_R)      (inf where L_S(D_S) <= delta_R;
                                                             h_R(D) = D, h_S(0) = 0)

and the effective reference data of a mix *add*: ``D_eff = sum_S h_S(D_S)``. The mix's CE is
then

    L_mix = min(L_R(D_eff), min_S L_S(D_S))          at N0 (N fixed), or
    L_mix = L_J(N, D_eff)                            with a usable joint law L_J of the reference,

the second assuming that the exchange rates measured at N0 hold at every N. The ``min`` only
binds where one part alone is below the reference floor (``h_S = inf``): a mix is never predicted
worse than its best part alone.

**Cost.** ``sum_S price_S * D_S`` for the pairs, plus the :class:`CostModel`'s training cost of
N on all ``sum_S D_S`` pairs (and its inference cost of N; ``dollars_per_annotation`` is ignored:
the prices replace it).

**Search.** The loss falls with every D_S, so the optimum spends the whole budget. At one N the
money left after the fixed costs buys ``D_S = s_S * money / (price_S + training per pair)`` for
budget shares ``s`` on the simplex: every point of a simplex lattice (``steps`` per unit) is
evaluated, and the best is polished with SLSQP. With a joint law the same is done on a log grid
of N, polished by a bounded scalar search. The interval re-evaluates the chosen mix under every
bootstrap draw of the laws (each source's draws paired with the reference's through a seeded
permutation, as in :mod:`.exchange`).

Pure numpy/scipy; whether the laws may answer at all (SPEC 7) is the caller's check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from ._checks import coverage, nonneg_int, positive_number
from .budget import CostModel, _check_bounds
from .laws import ChinchillaLaw, DataSizeLaw, JointLaw
from .usability import extrapolation


@dataclass(frozen=True)
class SourceMix:
    """The answer: buy ``pairs[S]`` pairs of each source and train an N-parameter model.

    Attributes:
        N: model size (the laws' N0 when ``N_fixed``).
        pairs: source -> pairs bought, D_S (0 for a source the answer does not buy).
        effective: source -> its effective reference pairs h_S(D_S) (inf: below the floor).
        effective_pairs: ``D_eff = sum_S h_S(D_S)``.
        loss: the predicted CE of the mix.
        interval: (lo, hi) of that CE over the bootstrap draws at ``ci_level``, or None when a
            law has no bootstrap.
        annotation: source -> dollars spent on its pairs.
        training, inference: dollars (the :class:`CostModel` at N on ``sum_S D_S`` pairs).
        budget: the budget asked.
        N_fixed: True when N is the laws' model size (no joint law to move it).
        at_bound: "" or "N lower bound" / "N upper bound" (the optimum sits on the search box).
        extrapolation: "N", "D_eff" and each bought source -> how far beyond its fitted range
            the answer lies (1.0 inside; see :func:`~densescale.scaling.extrapolation`).
        reference: the reference source's name.
        ci_level: e.g. 0.95.
    """

    N: float
    pairs: dict[str, float]
    effective: dict[str, float]
    effective_pairs: float
    loss: float
    interval: tuple[float, float] | None
    annotation: dict[str, float]
    training: float
    inference: float
    budget: float
    N_fixed: bool
    at_bound: str
    extrapolation: dict[str, float]
    reference: str
    ci_level: float

    @property
    def total(self) -> float:
        """Dollars spent: annotation of every source + training + inference."""
        return sum(self.annotation.values()) + self.training + self.inference

    @property
    def shares(self) -> dict[str, float]:
        """source -> share of the annotation dollars."""
        spent = sum(self.annotation.values())
        return {s: (v / spent if spent > 0 else 0.0) for s, v in self.annotation.items()}


def effective_pairs(reference: DataSizeLaw, law: DataSizeLaw, D) -> np.ndarray:
    """``h_S(D) = B_R / (L_S(D) - delta_R)^(1/beta_R)``: the reference pairs that reach the CE of
    ``D`` pairs of the source of ``law`` (any shape, >= 0; 0 for D = 0, inf where
    ``L_S(D) <= delta_R``). With ``law is reference`` it is D itself."""
    d = np.asarray(D, dtype=float)
    if np.any(~(d >= 0)):
        raise ValueError("D must be >= 0 (pairs of a source)")
    if law is reference:
        return d.copy()
    out = np.zeros(d.shape)
    pos = d > 0
    out[pos] = reference.D_for_loss(law.predict(d[pos]))
    return out


def mix_loss(
    laws: Mapping[str, DataSizeLaw],
    pairs: Mapping[str, object],
    *,
    reference: str = "human",
    joint: JointLaw | ChinchillaLaw | None = None,
    N=None,
) -> np.ndarray:
    """The predicted CE of a mix (the module docstring's ``L_mix``), broadcast over the arrays
    in ``pairs`` (source -> D_S >= 0) and ``N`` (with ``joint`` only).

    Raises:
        KeyError: ``reference`` not in ``laws``, or a source of ``pairs`` without a law.
        ValueError: a negative D_S; ``N`` given without ``joint`` or the reverse.
    """
    ref = _reference(laws, reference)
    if (joint is None) != (N is None):
        raise ValueError("N and joint go together: N moves only along a joint law")
    missing = sorted(set(pairs) - set(laws))
    if missing:
        raise KeyError(f"pairs name source(s) without a data-size law: {missing}")
    arrays = {s: np.asarray(v, dtype=float) for s, v in pairs.items()}
    d_eff = sum(effective_pairs(ref, laws[s], d) for s, d in arrays.items())
    with np.errstate(divide="ignore", over="ignore"):
        # the laws take finite positive sizes: inf (below the floor) reads as the floor, and no
        # pair at all as an infinite CE
        clipped = np.clip(d_eff, 1e-300, 1e300)
        if joint is not None:
            loss = np.asarray(joint.predict(N, clipped), dtype=float)
            return np.where(d_eff > 0, loss, np.inf)
        loss = np.where(d_eff > 0, ref.predict(clipped), np.inf)
        for s, d in arrays.items():
            own = np.where(d > 0, laws[s].predict(np.clip(d, 1e-300, 1e300)), np.inf)
            loss = np.minimum(loss, own)
    return loss


def optimal_mix(
    laws: Mapping[str, DataSizeLaw],
    prices: Mapping[str, float],
    cost: CostModel,
    budget: float,
    *,
    N: float,
    reference: str = "human",
    joint: JointLaw | ChinchillaLaw | None = None,
    N_bounds: tuple[float, float] | None = None,
    include_inference: bool = True,
    steps: int = 20,
    ci_level: float | None = None,
    seed: int = 0,
) -> SourceMix:
    """``min L_mix`` over the pairs of each priced source (and N, with ``joint``) s.t. the cost
    is at most ``budget`` (see the module docstring for the model, the cost and the search).

    Args:
        laws: source -> its usable data-size law at model size ``N`` (the reference among them).
        prices: source -> dollars per pair (>= 0, not all 0); the sources the answer may buy.
        cost: the :class:`CostModel` (its training and inference terms; its annotation price is
            replaced by ``prices``).
        budget: dollars, > 0.
        N: the model size the data-size laws were fitted at (the answer's N without ``joint``).
        reference: the source the others are exchanged against (default "human").
        joint: a usable joint law of the reference; then N is searched in ``N_bounds``.
        N_bounds: (lo, hi) of that search (required with ``joint``).
        include_inference: count the inference cost.
        steps: lattice points per unit share of the simplex search (>= 1).
        ci_level: interval coverage (default: the reference fit's, else 0.95).
        seed: seed of the bootstrap pairing.

    Returns:
        :class:`SourceMix`.

    Raises:
        KeyError: a priced source or the reference without a law.
        TypeError / ValueError: bad arguments; a budget that buys no pair at any N searched
            (the message gives the fixed cost).
    """
    ref = _reference(laws, reference)
    if not prices:
        raise ValueError("prices must name at least one source (source -> dollars per pair)")
    missing = sorted(set(prices) - set(laws))
    if missing:
        raise KeyError(f"prices name source(s) without a usable data-size law: {missing}")
    names = list(prices)
    price = np.array([positive_number(f"price of {s}", prices[s], allow_zero=True) for s in names])
    if not isinstance(cost, CostModel):
        raise TypeError(f"cost must be a CostModel, got {type(cost).__name__}")
    if cost.train_examples is not None and np.any(price == 0):
        free = [s for s, p in zip(names, price) if p == 0]
        raise ValueError(
            f"source(s) {free} cost nothing per pair (price 0, and with train_examples set "
            "training does not grow with D): the answer would buy unboundedly many"
        )
    budget = positive_number("budget", budget)
    n0 = positive_number("N", N)
    steps = nonneg_int("steps", steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if ci_level is None:
        ci_level = ref.fit.ci_level if ref.fit is not None else 0.95
    coverage("ci_level", ci_level)
    if joint is not None and not isinstance(joint, (JointLaw, ChinchillaLaw)):
        raise TypeError(f"joint must be a JointLaw or ChinchillaLaw, got {type(joint).__name__}")
    if joint is not None and N_bounds is None:
        raise ValueError("N_bounds (lo, hi) is required with a joint law")
    train = replace(cost, dollars_per_annotation=0.0)

    def money_and_rates(n: float) -> tuple[float, np.ndarray]:
        """Money left for pairs at N = n and dollars per pair of each source there."""
        fixed = float(train.cost(n, 1.0, include_inference=include_inference))
        per_pair = float(train.cost(n, 2.0, include_inference=include_inference)) - fixed
        fixed -= per_pair
        return budget - fixed, price + per_pair

    lattice = _simplex_lattice(len(names), steps)

    def best_at(n: float) -> tuple[float, np.ndarray]:
        """(loss, pairs) of the best mix at N = n (inf, None when nothing is affordable)."""
        money, rate = money_and_rates(n)
        if money <= 0:
            return np.inf, None

        def loss_of(shares: np.ndarray) -> np.ndarray:
            d = np.atleast_2d(shares) * (money / rate)
            at = {s: d[:, i] for i, s in enumerate(names)}
            extra = {} if joint is None else {"joint": joint, "N": n}
            return mix_loss(laws, at, reference=reference, **extra)

        values = loss_of(lattice)
        start = lattice[int(np.argmin(values))]
        best_s, best = start, float(np.min(values))
        if len(names) > 1:
            res = minimize(
                lambda s: float(loss_of(np.clip(s, 0, None))[0]),
                start,
                method="SLSQP",
                bounds=[(0.0, 1.0)] * len(names),
                constraints=[{"type": "eq", "fun": lambda s: np.sum(s) - 1.0}],
                options={"ftol": 1e-12, "maxiter": 200},
            )
            s = np.where(res.x > 1e-9, res.x, 0.0)  # SLSQP leaves ~1e-14 for "none"
            s = s / s.sum() if s.sum() > 0 else start
            polished = float(loss_of(s)[0])
            if polished < best:
                best_s, best = s, polished
        return best, best_s * (money / rate)

    at_bound = ""
    if joint is None:
        n = n0
        loss, d = best_at(n)
    else:
        lo, hi = _check_bounds("N_bounds", N_bounds)
        grid = np.linspace(np.log(lo), np.log(hi), 61)
        values = np.array([best_at(float(np.exp(x)))[0] for x in grid])
        i = int(np.argmin(values))
        x = grid[i]
        if np.isfinite(values[i]):
            a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
            res = minimize_scalar(
                lambda t: best_at(float(np.exp(t)))[0], bounds=(a, b), method="bounded"
            )
            if res.success and res.fun <= values[i]:
                x = float(res.x)
        n = float(np.exp(x))
        loss, d = best_at(n)
        if x <= grid[0] + 1e-6:
            at_bound = "N lower bound"
        elif x >= grid[-1] - 1e-6:
            at_bound = "N upper bound"
    if d is None:
        money, _ = money_and_rates(n)
        raise ValueError(
            f"budget ${budget:,.2f} buys no pair: training and inference at N = {n:.3g} already "
            f"cost ${budget - money:,.2f}"
        )
    pairs = {s: float(v) for s, v in zip(names, d)}
    eff = {s: float(effective_pairs(ref, laws[s], v)) for s, v in pairs.items()}
    split = train.split(n, max(sum(pairs.values()), 1e-12), include_inference=include_inference)
    return SourceMix(
        N=n,
        pairs=pairs,
        effective=eff,
        effective_pairs=float(sum(eff.values())),
        loss=float(loss),
        interval=_interval(laws, pairs, reference, joint, n, ci_level, seed),
        annotation={s: float(p * v) for s, p, v in zip(names, price, d)},
        training=float(split.training),
        inference=float(split.inference),
        budget=budget,
        N_fixed=joint is None,
        at_bound=at_bound,
        extrapolation=_extrapolation(laws, pairs, eff, reference, joint, n),
        reference=reference,
        ci_level=float(ci_level),
    )


def _reference(laws: Mapping[str, DataSizeLaw], reference: str) -> DataSizeLaw:
    if reference not in laws:
        raise KeyError(f"the reference source {reference!r} has no data-size law in {sorted(laws)}")
    for s, law in laws.items():
        if not isinstance(law, DataSizeLaw):
            raise TypeError(f"the law of {s!r} must be a DataSizeLaw, got {type(law).__name__}")
    return laws[reference]


def _simplex_lattice(k: int, steps: int) -> np.ndarray:
    """(m, k) every share vector with entries in {0, 1/steps, ..., 1} summing to 1 (stars and
    bars: each choice of k - 1 bar positions among steps + k - 1 slots)."""
    rows = []
    for bars in combinations(range(steps + k - 1), k - 1):
        edges = (-1, *bars, steps + k - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(k)])
    return np.array(rows, dtype=float) / steps


def _interval(laws, pairs, reference, joint, n, ci_level, seed):
    """(lo, hi) of the mix's CE over the paired bootstrap draws of every law used, or None."""
    used = [s for s, v in pairs.items() if v > 0]
    needed = {reference, *used}
    fits = {s: laws[s].fit for s in needed}
    if any(f is None or f.bootstrap is None or len(f.bootstrap) < 2 for f in fits.values()):
        return None
    if joint is not None and (joint.fit is None or joint.fit.bootstrap is None):
        return None
    m = min(len(f.bootstrap) for f in fits.values())
    if joint is not None:
        m = min(m, len(joint.fit.bootstrap))
    rng = np.random.default_rng(seed)
    draws = {}
    for s in sorted(needed):  # the reference's draws in order, every other source permuted
        rows = fits[s].bootstrap
        order = np.arange(m) if s == reference else rng.permutation(len(rows))[:m]
        draws[s] = [DataSizeLaw(**dict(zip(DataSizeLaw.param_names, r))) for r in rows[order]]
    if joint is not None:
        rows = joint.fit.bootstrap[rng.permutation(len(joint.fit.bootstrap))[:m]]
        joints = [type(joint)(**dict(zip(joint.param_names, r))) for r in rows]
    losses = []
    for i in range(m):
        these = {s: draws[s][i] for s in needed}
        extra = {} if joint is None else {"joint": joints[i], "N": n}
        at = {s: pairs[s] for s in used}
        losses.append(float(mix_loss(these, at, reference=reference, **extra)))
    tail = (1.0 - ci_level) / 2.0
    lo, hi = np.quantile(losses, [tail, 1.0 - tail], method="inverted_cdf")
    return float(lo), float(hi)


def _extrapolation(laws, pairs, eff, reference, joint, n) -> dict[str, float]:
    out = {}
    ranges = {} if joint is None or joint.fit is None else joint.fit.x_range
    out["N"] = extrapolation(n, ranges["N"]) if "N" in ranges else 1.0
    ref_fit = laws[reference].fit
    total = sum(eff.values())
    if ref_fit is not None and "D" in ref_fit.x_range and np.isfinite(total):
        out["D_eff"] = extrapolation(total, ref_fit.x_range["D"])
    for s, v in pairs.items():
        fit = laws[s].fit
        if v > 0 and fit is not None and "D" in fit.x_range:
            out[s] = extrapolation(v, fit.x_range["D"])
    return out
