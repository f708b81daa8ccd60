"""``summary.md``, one small function per section: find the code of any part of the page from its
heading in this table.

| heading in ``summary.md``                                  | function                  | file           |
|------------------------------------------------------------|---------------------------|----------------|
| ``# Dense retrieval scaling-law report`` (sources table)   | :func:`overview`          | ``study.py``   |
| ``## What the cells were evaluated on`` (pool, overlap)     | :func:`evaluation_section` | ``evaluation.py`` |
| ``## From contrastive entropy to ranking metrics``         | :func:`metric_maps_section` | ``study.py`` |
| ``## Training curves``                                     | :func:`training_curves_section` | ``study.py`` |
| ``## Source `<name>```  (per source, in this order:)       | :func:`source_section`    | ``source.py``  |
| ``### Cells (mean over runs)`` (and the notes under it)    | :func:`cells_section`     | ``cells.py``   |
| ``### Model-size law ...``                                 | :func:`model_size_section` | ``laws.py``   |
| ``### Data-size law ...``                                  | :func:`data_size_section` | ``laws.py``    |
| ``### Joint laws``                                         | :func:`joint_section`     | ``laws.py``    |
| ``### Embedding-dimension law ...`` (and the memory answer) | :func:`dimension_section` | ``laws.py``   |
| ``### Rank agreement of CE and the ranking metrics``       | :func:`rank_agreement_section` | ``agreement.py`` |
| ``### Seed noise against the gaps between sizes``          | :func:`seed_noise_section` | ``noise.py``  |
| ``### Forecast check``                                     | :func:`forecast_section`  | ``forecasts.py`` |
| ``### What the laws predict, in the metrics people quote`` | :func:`predictions_section` | ``forecasts.py`` |
| ``### Irreducible loss``                                   | :func:`irreducible_section` | ``laws.py``  |
| ``### Budget``                                             | :func:`budget_section`    | ``budget.py``  |
| ``## Annotation sources compared``                         | :func:`sources_section`   | ``study.py``   |
| ``## Annotation quality: the exchange rate against human pairs`` | :func:`exchange_section` | ``exchange.py`` |
| ``## Cost model of the budget answers``                    | :func:`cost_model_section` | ``study.py``  |

Numbers, intervals and the law tables they share are formatted in ``_format.py``. Every section
reads only the fitted results (:mod:`densescale.report.outcomes`) and returns its lines.
"""

from __future__ import annotations

from collections.abc import Mapping

from densescale.scaling import CostModel

from ..outcomes import SourceFits
from .evaluation import evaluation_section
from .exchange import exchange_section
from .source import source_section
from .study import (
    cost_model_section,
    metric_maps_section,
    overview,
    sources_section,
    training_curves_section,
)


def summary_markdown(
    all_fits: Mapping[str, SourceFits],
    *,
    generated: str,
    n_records: int,
    oracle: Mapping[str, float],
    files_by_source: Mapping[str, dict],
    figures: Mapping[str, str],
    common_d: int | None,
    n_boot: int,
    baselines: Mapping[str, Mapping],
    cost: CostModel,
) -> str:
    """The whole page. ``files_by_source``: source -> figure name -> PNG file; ``figures``: the
    study-wide PNGs drawn ("metrics_vs_ce", "training_curves", "sources", "exchange"); ``common_d``: the D at
    which the sources figure compares them."""
    first = next(iter(all_fits.values()))
    lines = overview(all_fits, generated, n_records)
    lines += evaluation_section(all_fits)
    lines += metric_maps_section(first, figures.get("metrics_vs_ce"))
    lines += training_curves_section(figures.get("training_curves"))
    for s, f in all_fits.items():
        lines += source_section(f, oracle.get(s), files_by_source[s], n_boot, baselines)
    lines += sources_section(all_fits, figures.get("sources"), common_d)
    lines += exchange_section(all_fits, figures.get("exchange"))
    lines += cost_model_section(cost, first.cost_sources)
    return "\n".join(lines)
