"""What a finished run reports (:class:`TrainResult`, also ``train_result.json``) and what its stop
means: converged, peaked early, memorising, above chance, not converged (the step cap), no dev."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from densescale.train.config import TrainConfig

# why a run stopped: dev CE stopped improving (converged), the step cap, or no dev pairs to judge by
STOP_REASONS = ("patience", "max_steps", "no_dev")
# what the stop means (TrainResult.convergence); only "converged" runs describe a model's quality
CONVERGENCE = ("converged", "peaked_early", "memorising", "above_chance", "not_converged", "no_dev")


@dataclass
class TrainResult:
    """What a finished run reports; also stored as train_result.json in its folder."""

    steps: int
    best_step: int
    best_dev_ce: float | None
    final_loss: float
    seconds: float
    history: list[dict] = field(default_factory=list)
    stop_reason: str = "max_steps"
    tokens_per_second: float = 0.0
    convergence: str = ""
    dev_chance: float | None = None

    @property
    def converged(self) -> bool:
        """True when training stopped because dev CE stopped improving (``patience`` evaluations
        without a gain of ``min_delta``), not at the ``max_steps`` safety cap, after its first
        evaluations and below chance (``convergence == "converged"``): the best checkpoint is then
        the model's converged quality, which is what the scaling laws describe."""
        if self.convergence:
            return self.convergence == "converged"
        return self.stop_reason == "patience"  # a result written before `convergence` existed

    def to_dict(self) -> dict:
        return {**self.__dict__, "converged": self.converged}

    @classmethod
    def from_dict(cls, d: dict) -> TrainResult:
        return cls(**{k: v for k, v in d.items() if k != "converged"})


def describe_convergence(result: TrainResult) -> str:
    """One short phrase for a run's ``convergence``, as the CLI and the report print it."""
    dev = [h["dev_ce"] for h in result.history if "dev_ce" in h]
    return {
        "converged": f"converged@{result.best_step}",
        "peaked_early": f"peaked early: best dev CE at step {result.best_step}, its first "
        "evaluations",
        "memorising": f"memorising: dev CE ended at {dev[-1] if dev else float('nan'):.3f}, above "
        f"chance {result.dev_chance or float('nan'):.3f}",
        "above_chance": f"above chance: best dev CE {result.best_dev_ce or float('nan'):.3f} >= "
        f"ln(K+1) = {result.dev_chance or float('nan'):.3f}",
        "not_converged": f"stopped at the {result.steps}-step cap",
        "no_dev": "no dev pairs to judge convergence by",
    }.get(result.convergence, result.stop_reason)


def convergence_of(
    stop_reason: str,
    best_step: int,
    history: Sequence[dict],
    cfg: TrainConfig,
    dev_chance: float | None,
) -> str:
    """What a run's stop means, one of ``CONVERGENCE``:

    - ``"not_converged"``: stopped at the ``max_steps`` cap; ``"no_dev"``: nothing to judge by;
    - ``"above_chance"``: even the best dev CE is at or above chance, ln(K+1): nothing learnt
      that carries to held-out pairs;
    - ``"memorising"``: dev CE went below chance, then ended at or above it (what the model
      learnt about its training pairs makes held-out pairs worse than a random scorer does);
    - ``"peaked_early"``: the best dev CE came at one of the first ``cfg.early_peak_evals``
      evaluations, so the kept checkpoint has barely trained;
    - ``"converged"``: otherwise (dev CE stopped improving after a real descent).
    """
    if stop_reason == "no_dev":
        return "no_dev"
    if stop_reason != "patience":
        return "not_converged"
    devs = [h["dev_ce"] for h in history if "dev_ce" in h]
    if dev_chance is not None and devs and min(devs) >= dev_chance:
        return "above_chance"
    if dev_chance is not None and devs and devs[-1] >= dev_chance:
        return "memorising"
    if cfg.early_peak_evals > 0 and best_step <= cfg.early_peak_evals * cfg.eval_every:
        return "peaked_early"
    return "converged"
