"""Training configuration: every knob of a run in one frozen, validated dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

PROTOCOLS = ("paper", "inbatch")
SCHEDULES = ("constant", "linear", "cosine")
# where random training negatives come from: the corpus minus every dev and test positive
# (default: training never pushes down the passages it is judged on), or the whole corpus (the
# authors' sampling, DRScale dataset.py)
NEGATIVE_SOURCES = ("non-eval", "corpus")


def reject_unknown_keys(cls, values: dict, what: str) -> None:
    """Raise ``ValueError`` naming the keys of ``values`` that are not fields of dataclass ``cls``."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {sorted(known)}")


@dataclass(frozen=True)
class TrainConfig:
    """How to train a dual encoder.

    ``protocol="paper"`` is SPEC 1.3: each query sees its positive and ``num_negatives`` random corpus
    passages shared by the whole batch, no in-batch negatives, scale 1 (plain dot product), AdamW
    lr 5e-6, weight decay 1e-3, no warm-up, gradient clipping at 1.0, max length 25 / 180.
    ``protocol="inbatch"`` uses every other query's candidates as negatives (plus
    ``group_negatives`` random corpus passages per query and the optional shared pool), with a fixed
    or learnable ``scale``.

    Stopping: every ``eval_every`` steps dev CE is measured; after ``patience`` evaluations without
    an improvement of at least ``min_delta`` nats the run stops as converged; ``max_steps`` is the
    safety cap (``patience = 0``: always run to the cap). With ``plateau_decays = n`` the first n
    plateaus multiply the learning rate by ``plateau_factor`` and training goes on (as
    ReduceLROnPlateau does); the n+1-th stops it, so a noisy dev curve at a high rate is not
    mistaken for convergence. A run stopped by patience whose best dev CE came at one of its first
    ``early_peak_evals`` evaluations has *peaked early* (it learnt little, then dev CE rose), and
    one whose last dev CE is at or above chance, ln(K+1), is *memorising*: neither counts as
    converged (``TrainResult.convergence``). ``negatives_from`` is where random
    negatives are drawn from, the study's pool (``"non-eval"``: corpus minus dev and test
    positives) or the whole ``"corpus"`` (the authors' choice; under it, the test positives are
    pushed down as negatives while training, and a model from scratch learns "was a training
    positive" instead of relevance). ``log_every`` steps between ``metrics.jsonl`` lines;
    ``tensorboard`` also writes them to a TensorBoard folder.
    """

    protocol: str = "paper"
    batch_size: int = 128
    num_negatives: int = 256
    group_negatives: int = 0
    scale: float = 1.0
    learnable_scale: bool = False
    lr: float = 5e-6
    weight_decay: float = 1e-3
    warmup_steps: int = 0
    schedule: str = "constant"
    max_steps: int = 1000
    grad_clip: float = 1.0
    query_max_length: int = 25
    passage_max_length: int = 180
    eval_every: int = 200
    dev_pairs: int = 2000
    dev_pool: int = 20000
    dev_repeats: int = 2
    patience: int = 0
    min_delta: float = 0.0
    early_peak_evals: int = 2
    plateau_decays: int = 0
    plateau_factor: float = 0.3
    log_every: int = 10
    tensorboard: bool = False
    negatives_from: str = "non-eval"
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "auto"
    bf16: bool | None = None
    gradient_checkpointing: bool = False
    loss_backend: str = "auto"

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        positive = (
            "batch_size",
            "max_steps",
            "query_max_length",
            "passage_max_length",
            "eval_every",
            "checkpoint_every",
            "dev_repeats",
            "log_every",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "num_negatives",
            "group_negatives",
            "warmup_steps",
            "patience",
            "early_peak_evals",
            "dev_pairs",
            "dev_pool",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.plateau_decays < 0:
            raise ValueError(f"plateau_decays must be >= 0, got {self.plateau_decays}")
        if not 0.0 < self.plateau_factor < 1.0:
            raise ValueError(f"plateau_factor must be in (0, 1), got {self.plateau_factor}")
        if not self.min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0 (nats of dev CE), got {self.min_delta}")
        if self.negatives_from not in NEGATIVE_SOURCES:
            raise ValueError(
                f"negatives_from must be one of {NEGATIVE_SOURCES}, got {self.negatives_from!r}"
            )
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 (0 disables clipping), got {self.grad_clip}")
        if self.protocol == "paper" and self.num_negatives < 1:
            raise ValueError(
                "protocol 'paper' needs num_negatives >= 1 (the shared random negatives)"
            )
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a TOML table; unknown keys are an error naming them."""
        reject_unknown_keys(cls, values, "training option(s)")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
