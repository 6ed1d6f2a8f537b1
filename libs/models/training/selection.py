"""The selection metric: the one validation score that every choice of a training run is made by.

Trials, kinds, the ensemble's weight and the challenger against the serving champion are
all compared by the same metric (`TrainingSettings.selection_metric`), so a run never
optimises one number and promotes by another. Its scores are those of
`evaluation.selection_score`, the same functions the reports use.

Why a module of its own, with no numerical imports: the settings name a metric, and the
settings are read by every pipeline task, most of which never score a model.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Literal


class SelectionMetric(StrEnum):
    """A metric that choices can be made by, and which way is better.

    Macro-F1 is the default: the star mix is skewed to 5, and macro-F1 weighs each star
    alike. The ordinal metrics suit a deployment where a near miss (4 for 5) costs less
    than a far one. MAE in stars is an error, so lower is better; every other is a share
    or an agreement, where higher is better.
    """

    ACCURACY = "accuracy"
    MACRO_F1 = "macro_f1"
    MAE_STARS = "mae_stars"
    OFF_BY_ONE_ACCURACY = "off_by_one_accuracy"
    QUADRATIC_KAPPA = "quadratic_kappa"

    @property
    def higher_is_better(self) -> bool:
        return self is not SelectionMetric.MAE_STARS

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        """The Optuna direction of a study searching by this metric."""
        return "maximize" if self.higher_is_better else "minimize"

    @property
    def better(self) -> str:
        """Which way is better, for messages: 'higher' or 'lower'."""
        return "higher" if self.higher_is_better else "lower"

    def oriented(self, score: float) -> float:
        """`score` signed so that more is always better: what `max`, tie tolerances and
        margins compare, whichever the metric's direction."""
        return score if self.higher_is_better else -score

    def best(self, scores: Iterable[float]) -> float:
        """The best of `scores`, in the metric's own units."""
        return self.oriented(max(self.oriented(score) for score in scores))
