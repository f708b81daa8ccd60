"""Every figure of a study report, one function per figure, each in one file; each writes a PNG
atomically (``densescale.report._io.save_figure``).

| figure (file in the report folder)                    | function                 | file               |
|-------------------------------------------------------|--------------------------|--------------------|
| CE vs N per D (``loss_vs_N_<src>.png``)               | :func:`plot_loss_vs_n`   | ``sizes.py``       |
| CE vs D per N (``loss_vs_D_<src>.png``)               | :func:`plot_loss_vs_d`   | ``sizes.py``       |
| CE vs embedding dim per (N, D) (``loss_vs_dim_...``)  | :func:`plot_loss_vs_dim` | ``dims.py``        |
| residuals (``residuals_<src>.png``)                   | :func:`plot_residuals`   | ``residuals.py``   |
| forecast checks (``forecast_<src>.png``)              | :func:`plot_forecasts`   | ``forecasts.py``   |
| sources compared (``sources.png``)                    | :func:`plot_sources`     | ``sources.py``     |
| CE vs D per source, exchange rate vs D (``exchange.png``) | :func:`plot_exchange` | ``exchange.py``   |
| ranking metrics vs CE, with the maps (``metrics_vs_ce.png``) | :func:`plot_metric_maps` | ``metric_maps.py`` |
| budget contours (``budget_<src>.png``)                | :func:`plot_budget`      | ``budget.py``      |
| training curves of cells (``training_curves.png``)    | :func:`plot_training_curves` | ``training.py`` |

What they share (axis labels, colours, the chance and oracle lines, the grey crosses of cells
left out of the fits, the log-log finish) is in ``_style.py``. Every CE figure draws chance,
ln(K+1), and the oracle CE where known as horizontal lines, and marks cells left out of the fits
(near chance, not converged) with grey crosses. matplotlib is imported only inside the functions
(Agg canvas, no pyplot state), so importing this package does not import it.
"""

from __future__ import annotations

from .budget import plot_budget
from .dims import plot_loss_vs_dim
from .exchange import plot_exchange
from .forecasts import plot_forecasts
from .metric_maps import plot_metric_maps
from .residuals import plot_residuals
from .sizes import plot_loss_vs_d, plot_loss_vs_n
from .sources import plot_sources
from .training import plot_training_curves, read_training_log

__all__ = [
    "plot_budget",
    "plot_exchange",
    "plot_forecasts",
    "plot_loss_vs_d",
    "plot_loss_vs_dim",
    "plot_loss_vs_n",
    "plot_metric_maps",
    "plot_residuals",
    "plot_sources",
    "plot_training_curves",
    "read_training_log",
]
