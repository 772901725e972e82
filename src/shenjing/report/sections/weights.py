"""Report blocks of the ``weights`` view: weight histograms and statistics across epochs."""

from __future__ import annotations

from typing import Any

from shenjing.report.sections._files import figure_block
from shenjing.runs import Run


def weights_blocks(run: Run) -> list[Any]:
    """The weights view's figures (histograms and statistics per layer and epoch), shown in
    the dynamics section; absent figures are left out by the caller."""
    return [
        figure_block(run, "weights-histograms",
                     "What this shows: each layer's weight distribution at every saved epoch "
                     "(one line per epoch); training widens or reshapes it."),
        figure_block(run, "weights-stats",
                     "What this shows: weight norm, standard deviation and fraction of "
                     "weights near zero, per layer and epoch."),
    ]
