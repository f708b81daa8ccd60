"""``## Source `<name>```: every section of one annotation source, in page order."""

from __future__ import annotations

from collections.abc import Mapping

from ..outcomes import SourceFits
from .agreement import rank_agreement_section
from .budget import budget_section
from .cells import cells_section
from .forecasts import forecast_section, predictions_section
from .laws import (
    data_size_section,
    dimension_section,
    irreducible_section,
    joint_section,
    model_size_section,
)
from .noise import seed_noise_section


def source_section(
    fits: SourceFits,
    oracle: float | None,
    files: dict,
    n_boot: int,
    baselines: Mapping[str, Mapping],
) -> list[str]:
    """Cells, the laws (model size, data size, joint, dimension), the rank agreement of CE and
    the ranking metrics, the seed noise, forecast checks, predictions, irreducible loss and
    budget of one source; ``files`` names its figures."""
    out = [f"## Source `{fits.source}`", ""]
    out += cells_section(fits, baselines)
    out += [_intervals_note(n_boot), ""]
    out += model_size_section(fits, files)
    out += data_size_section(fits, files)
    out += joint_section(fits, files)
    out += dimension_section(fits, files)
    out += rank_agreement_section(fits)
    out += seed_noise_section(fits)
    out += forecast_section(fits, files)
    out += predictions_section(fits)
    out += irreducible_section(fits, oracle)
    out += budget_section(fits, files)
    return out


def _intervals_note(n_boot: int) -> str:
    """What the brackets in the law tables are."""
    intervals = (
        f"Values in brackets are 95% bootstrap intervals ({n_boot} refits with resimulated "
        "measurement noise; none where a fit has no more points than parameters)"
        if n_boot
        else "No bootstrap intervals (n_boot = 0)"
    )
    return (
        f"{intervals}; forecast check = the law refitted without the largest size(s) and "
        "asked to forecast them (details below)."
    )
