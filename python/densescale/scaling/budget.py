"""What to train with a budget: an explicit cost model and ``min L(N, D) s.t. cost(N, D) <= budget``.

Cost model (SPEC 1.6; the paper's own constants are not public, so every number is a parameter)::

    annotation  = dollars_per_annotation * D
    training    = dollars_per_flop * 6 * N * train_tokens(D)
                  train_tokens(D) = train_tokens_per_example * (epochs * D   or   train_examples)
    pretraining = dollars_per_flop * 6 * N * pretrain_tokens   (self-supervised, per model; 0: none)
    inference   = dollars_per_flop * 2 * N * (corpus_size * tokens_per_passage
                                              + queries_served * tokens_per_query)
    dollars_per_flop = accelerator_dollars_per_hour / (3600 * achieved_flops)

With a law of model size and embedding dimension (:class:`~densescale.scaling.ModelDimLaw`) the
question is what to serve under a memory budget (bytes), where the index and the encoder share it::

    memory = corpus_size * d * bytes_per_value  +  N * bytes_per_param

(``bytes_per_value`` = 4 for fp32 vectors, 2 for fp16, 1 for int8), optionally with the dollar
budget above at the law's data size D as well. A dimension costs ``corpus_size * bytes_per_value``
bytes, the memory of that many parameters: the answer trades d against N.

N is the non-embedding parameter count (SPEC 1.2); ``6 N`` FLOPs per token for a forward and
backward pass and ``2 N`` for a forward pass are the usual dense-transformer estimates (attention
and embedding lookups ignored).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy.optimize import minimize_scalar

from ._checks import positive_number, positive_values
from .laws import ChinchillaLaw, JointLaw, ModelDimLaw, _out


@dataclass(frozen=True)
class CostModel:
    """Dollar cost of annotating D pairs, training an N-parameter encoder on them, and serving it.

    Defaults are documented assumptions, not the paper's (unpublished) constants: crowd-sourced
    relevance labels at $0.50 a pair; a cloud accelerator at $2/hour achieving 1e14 FLOP/s
    (about a third of an A100's bf16 peak); the paper's training protocol (query 25 + passage 180
    tokens per example, plus 256 shared negatives of 180 tokens per batch of 128 = 360 tokens per
    example) for 10 epochs; an MS MARCO-sized corpus (8.8M passages, ~80 tokens each) encoded once,
    and 1e9 queries of ~10 tokens served over the model's life.

    Attributes:
        dollars_per_annotation: $ per annotated (query, positive passage) pair.
        accelerator_dollars_per_hour: $ per accelerator hour.
        achieved_flops: sustained FLOP/s of one accelerator on this workload.
        train_tokens_per_example: tokens processed per training example (incl. its negatives).
        epochs: passes over the D annotations (used when ``train_examples`` is None).
        train_examples: if set, a fixed number of examples seen (steps x batch), whatever D is.
        corpus_size: passages encoded for the index.
        tokens_per_passage: mean tokens per passage.
        queries_served: queries encoded in deployment.
        tokens_per_query: mean tokens per query.
        pretrain_tokens: tokens of a self-supervised pretraining run before fine-tuning, whatever
            D is (a study's ``[pretrain]`` stage; its records carry ``pretrain.tokens``); 0: none.
        bytes_per_value: bytes per stored vector component of the index (4: fp32).
        bytes_per_param: bytes per encoder parameter in serving memory (4: fp32).
    """

    dollars_per_annotation: float = 0.5
    accelerator_dollars_per_hour: float = 2.0
    achieved_flops: float = 1e14
    train_tokens_per_example: float = 565.0
    epochs: float = 10.0
    train_examples: float | None = None
    corpus_size: float = 8.8e6
    tokens_per_passage: float = 80.0
    queries_served: float = 1e9
    tokens_per_query: float = 10.0
    bytes_per_value: float = 4.0
    bytes_per_param: float = 4.0
    pretrain_tokens: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "train_examples" and v is None:
                continue
            positive_number(
                f.name,
                v,
                allow_zero=f.name not in ("achieved_flops", "bytes_per_value", "bytes_per_param"),
            )

    @property
    def dollars_per_flop(self) -> float:
        return self.accelerator_dollars_per_hour / (3600.0 * self.achieved_flops)

    def train_tokens(self, D) -> np.ndarray:
        """Tokens seen in training with D annotations."""
        d = np.asarray(D, dtype=float)
        examples = self.epochs * d if self.train_examples is None else self.train_examples + 0 * d
        return self.train_tokens_per_example * examples

    @property
    def inference_tokens(self) -> float:
        """Tokens encoded in deployment: the corpus once plus every served query."""
        return (
            self.corpus_size * self.tokens_per_passage + self.queries_served * self.tokens_per_query
        )

    def split(self, N, D, *, include_inference: bool = True) -> CostSplit:
        """Cost per item (arrays broadcast over N and D, or floats)."""
        n, d = np.broadcast_arrays(positive_values("N", N), positive_values("D", D))
        annotation = self.dollars_per_annotation * d
        training = self.dollars_per_flop * 6.0 * n * self.train_tokens(d)
        inference = (
            self.dollars_per_flop * 2.0 * n * self.inference_tokens
            if include_inference
            else np.zeros_like(n)
        )
        pretraining = self.dollars_per_flop * 6.0 * n * self.pretrain_tokens
        return CostSplit(
            annotation=_out(annotation),
            training=_out(training),
            inference=_out(inference),
            pretraining=_out(pretraining),
        )

    def cost(self, N, D, *, include_inference: bool = True) -> float | np.ndarray:
        """Total dollars of (N, D): annotation + training (+ inference)."""
        return self.split(N, D, include_inference=include_inference).total

    def index_bytes(self, d) -> float | np.ndarray:
        """Bytes of the index: ``corpus_size * d * bytes_per_value``."""
        return _out(self.corpus_size * positive_values("d", d) * self.bytes_per_value)

    def serving_bytes(self, N, d) -> float | np.ndarray:
        """Index plus encoder: ``corpus_size * d * bytes_per_value + N * bytes_per_param``."""
        n, x = np.broadcast_arrays(positive_values("N", N), positive_values("d", d))
        return _out(self.corpus_size * x * self.bytes_per_value + n * self.bytes_per_param)


@dataclass(frozen=True)
class CostSplit:
    """Dollars per item; ``total`` is their sum."""

    annotation: float | np.ndarray
    training: float | np.ndarray
    inference: float | np.ndarray
    pretraining: float | np.ndarray = 0.0

    @property
    def total(self) -> float | np.ndarray:
        return self.annotation + self.training + self.inference + self.pretraining


@dataclass(frozen=True)
class Allocation:
    """The budget answer: train an N-parameter model on D annotations.

    Attributes:
        N, D: the optimum (floats; round as you need).
        loss: the law's predicted loss there.
        cost: its cost split (``cost.total <= budget``).
        budget: the budget asked.
        include_inference: whether inference cost counted.
        at_bound: "" or which search bound the optimum sits on (e.g. "N upper bound"): the law
            would take the allocation beyond the range searched.
        d: the embedding dimension (answers of a law of N and d), else None.
        memory_budget, memory_bytes: the serving-memory budget asked and what the answer uses
            (index + encoder, bytes), for answers of a law of N and d; else None.
    """

    N: float
    D: float
    loss: float
    cost: CostSplit
    budget: float | None
    include_inference: bool
    at_bound: str = ""
    d: float | None = None
    memory_budget: float | None = None
    memory_bytes: float | None = None


def _grid_minimum(objective, grid: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Minimum of a 1-d ``objective`` (vectorised over log sizes): the best ``grid`` point, then
    a bounded refinement between its neighbours. Returns (argmin, min)."""
    i = int(np.argmin(values))
    best_x, best = float(grid[i]), float(values[i])
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    if hi > lo:
        res = minimize_scalar(
            lambda x: float(objective(np.array([x]))[0]),
            bounds=(lo, hi),
            method="bounded",
            options={"xatol": 1e-8},
        )
        if res.success and res.fun <= best:
            best_x, best = float(res.x), float(res.fun)
    return best_x, best


def _along_the_budget(loss, best_other, other_lo: float):
    """The 1-d objective over log x of a budget search: the loss at (x, best_other(log x)), the
    other size being the largest the budget allows at x; inf where that is below ``other_lo``.
    ``loss(x, other)`` takes arrays."""

    def objective(log_x: np.ndarray) -> np.ndarray:
        other = best_other(log_x)
        ok = other >= other_lo
        out = np.full(np.shape(log_x), np.inf)
        if np.any(ok):
            out[ok] = loss(np.exp(log_x[ok]), other[ok])
        return out

    return objective


def _on_bounds(searched: str, log_x: float, grid: np.ndarray, other: str, value: float, lo, hi):
    """Which bounds of the search box the optimum sits on, e.g. "N upper bound, D lower bound"."""
    at_bound = []
    if log_x <= grid[0] + 1e-6:
        at_bound.append(f"{searched} lower bound")
    if log_x >= grid[-1] - 1e-6:
        at_bound.append(f"{searched} upper bound")
    if value >= hi * (1 - 1e-9):
        at_bound.append(f"{other} upper bound")
    if value <= lo * (1 + 1e-9):
        at_bound.append(f"{other} lower bound")
    return ", ".join(at_bound)


def _check_law(law) -> None:
    if not isinstance(law, (JointLaw, ChinchillaLaw)):
        raise TypeError(
            f"law must be a JointLaw or ChinchillaLaw (a law of N and D), got {type(law).__name__}"
        )


def _check_bounds(name: str, bounds) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a pair (low, high), got {bounds!r}") from exc
    if not (0 < lo < hi and np.isfinite(hi)):
        raise ValueError(f"{name} must satisfy 0 < low < high < inf, got {bounds!r}")
    return lo, hi


def _max_d(cost: CostModel, budget: float, n: np.ndarray, include_inference: bool) -> np.ndarray:
    """The largest D affordable at model size n (cost is affine in D at fixed N); may be <= 0."""
    c1 = cost.cost(n, 1.0, include_inference=include_inference)
    c2 = cost.cost(n, 2.0, include_inference=include_inference)
    per_d = c2 - c1
    fixed = c1 - per_d
    with np.errstate(divide="ignore"):
        return np.where(per_d > 0, (budget - fixed) / per_d, np.where(fixed <= budget, np.inf, 0))


def optimal_allocation(
    law: JointLaw | ChinchillaLaw | ModelDimLaw,
    cost: CostModel,
    budget: float | None,
    *,
    include_inference: bool = True,
    N_bounds: tuple[float, float] = (1e5, 1e11),
    D_bounds: tuple[float, float] = (1e2, 1e9),
    memory_budget: float | None = None,
    d_bounds: tuple[float, float] = (8.0, 8192.0),
    D: float | None = None,
) -> Allocation:
    """Solve ``min_{N, D} L(N, D)  s.t.  cost(N, D) <= budget`` within the given bounds.

    With a :class:`ModelDimLaw` it solves ``min_{N, d} L(N, d)`` s.t.
    ``cost.serving_bytes(N, d) <= memory_budget`` (and ``cost(N, D) <= budget`` at the law's D,
    or ``D``, when ``budget`` is given), searching ``d_bounds`` and ``N_bounds``; see
    :func:`optimal_dim_allocation`.

    The loss falls with D, so the optimum spends the whole budget: for each N the best D is the
    largest affordable one, ``D*(N)``. A dense 1-D search over log N of ``L(N, D*(N))`` finds the
    basin, and a bounded scalar minimisation polishes it.

    Args:
        law: a fitted joint law (``predict(N, D)``).
        cost: the :class:`CostModel`.
        budget: dollars, > 0.
        include_inference: count the inference cost (favours smaller N).
        N_bounds, D_bounds: the search box (laws are fitted over a finite range; the result says
            when the optimum sits on this box).

    Raises:
        TypeError / ValueError: bad arguments, or a budget below the cheapest point of the box
            (the message gives that cost).
    """
    if isinstance(law, ModelDimLaw):
        return optimal_dim_allocation(
            law,
            cost,
            memory_budget,
            budget=budget,
            D=D,
            include_inference=include_inference,
            N_bounds=N_bounds,
            d_bounds=d_bounds,
        )
    _check_law(law)
    if not isinstance(cost, CostModel):
        raise TypeError(f"cost must be a CostModel, got {type(cost).__name__}")
    if memory_budget is not None:
        raise ValueError("memory_budget needs a law of N and d (ModelDimLaw), got a law of N, D")
    budget = positive_number("budget", budget)
    n_lo, n_hi = _check_bounds("N_bounds", N_bounds)
    d_lo, d_hi = _check_bounds("D_bounds", D_bounds)
    cheapest = float(cost.cost(n_lo, d_lo, include_inference=include_inference))
    if cheapest > budget:
        raise ValueError(
            f"budget ${budget:,.2f} is infeasible: the cheapest allocation in the search box "
            f"(N = {n_lo:.3g}, D = {d_lo:.3g}) already costs ${cheapest:,.2f}"
        )

    def d_star(log_n: np.ndarray) -> np.ndarray:
        return np.minimum(_max_d(cost, budget, np.exp(log_n), include_inference), d_hi)

    objective = _along_the_budget(law.predict, d_star, d_lo)
    grid = np.linspace(np.log(n_lo), np.log(n_hi), 801)
    best_log_n, best = _grid_minimum(objective, grid, objective(grid))
    n = float(np.exp(best_log_n))
    d = float(d_star(np.array([best_log_n]))[0])
    return Allocation(
        N=n,
        D=d,
        loss=float(best),
        cost=cost.split(n, d, include_inference=include_inference),
        budget=budget,
        include_inference=include_inference,
        at_bound=_on_bounds("N", best_log_n, grid, "D", d, d_lo, d_hi),
    )


def optimal_dim_allocation(
    law: ModelDimLaw,
    cost: CostModel,
    memory_budget: float,
    *,
    budget: float | None = None,
    D: float | None = None,
    include_inference: bool = True,
    N_bounds: tuple[float, float] = (1e5, 1e11),
    d_bounds: tuple[float, float] = (8.0, 8192.0),
) -> Allocation:
    """Trade embedding dimension against model size: ``min_{N, d} L(N, d)`` s.t.

        corpus_size * d * bytes_per_value + N * bytes_per_param <= memory_budget
        cost(N, D) <= budget                                      (only when budget is given)

    The loss falls with N, so for each d the best N is the largest one both budgets allow; a
    dense search over log d of ``L(N*(d), d)`` and a bounded polish find the optimum.

    Args:
        law: a fitted :class:`ModelDimLaw`.
        cost: the :class:`CostModel` (corpus_size, bytes_per_value, bytes_per_param; dollars).
        memory_budget: bytes of serving memory for the index and the encoder, > 0.
        budget: dollars (optional), spent at the data size ``D`` (default ``law.D``).
        include_inference: count the inference cost in the dollar budget.
        N_bounds, d_bounds: the search box; the answer says when it sits on it.

    Raises:
        TypeError / ValueError: bad arguments, a budget that no point of the box meets, or a
            dollar budget without a data size.
    """
    if not isinstance(law, ModelDimLaw):
        raise TypeError(f"law must be a ModelDimLaw (a law of N and d), got {type(law).__name__}")
    if not isinstance(cost, CostModel):
        raise TypeError(f"cost must be a CostModel, got {type(cost).__name__}")
    if memory_budget is None:
        raise ValueError("memory_budget (bytes) is needed to trade d against N, got None")
    memory = positive_number("memory_budget", memory_budget)
    n_lo, n_hi = _check_bounds("N_bounds", N_bounds)
    d_lo, d_hi = _check_bounds("d_bounds", d_bounds)
    data = None
    if budget is not None:
        budget = positive_number("budget", budget)
        data = D if D is not None else law.D
        if data is None:
            raise ValueError("a dollar budget needs the data size: pass D (the law has no D)")
        data = positive_number("D", data)

    def n_star(log_d: np.ndarray) -> np.ndarray:
        d = np.exp(log_d)
        room = memory - cost.corpus_size * d * cost.bytes_per_value
        n = np.where(room > 0, room / cost.bytes_per_param, 0.0)
        if budget is not None:
            # cost is affine in N at fixed D: the largest affordable N
            c1 = cost.cost(1.0, data, include_inference=include_inference)
            c2 = cost.cost(2.0, data, include_inference=include_inference)
            per_n, fixed = c2 - c1, c1 - (c2 - c1)
            n = np.minimum(n, (budget - fixed) / per_n if per_n > 0 else np.inf)
        return np.minimum(n, n_hi)

    objective = _along_the_budget(lambda d, n: law.predict(n, d), n_star, n_lo)
    grid = np.linspace(np.log(d_lo), np.log(d_hi), 801)
    values = objective(grid)
    if not np.any(np.isfinite(values)):
        need = float(cost.serving_bytes(n_lo, d_lo))
        raise ValueError(
            f"memory_budget {memory:.4g} bytes (with budget {budget!r}) is infeasible: the "
            f"smallest point of the box (N = {n_lo:.3g}, d = {d_lo:.3g}) needs {need:.4g} bytes"
            + ("" if budget is None else " or more dollars than the budget")
        )
    best_log_d, best = _grid_minimum(objective, grid, values)
    d = float(np.exp(best_log_d))
    n = float(n_star(np.array([best_log_d]))[0])
    split_d = data if data is not None else law.D
    if split_d is None:  # no data size: the dollar cost is not defined
        nan = float("nan")
        dollars = CostSplit(annotation=nan, training=nan, inference=nan)
    else:
        dollars = cost.split(n, split_d, include_inference=include_inference)
    return Allocation(
        N=n,
        D=float("nan") if split_d is None else float(split_d),
        loss=float(best),
        cost=dollars,
        budget=budget,
        include_inference=include_inference,
        at_bound=_on_bounds("d", best_log_d, grid, "N", n, n_lo, n_hi),
        d=d,
        memory_budget=memory,
        memory_bytes=float(cost.serving_bytes(n, d)),
    )
