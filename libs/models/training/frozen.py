"""The frozen evaluation set of a model's lineage: reviews every challenger is graded on, which
production can never write to.

Why: a challenger trained on production feedback is also graded on a test split that holds
a share of that feedback, so feedback that lies (ratings flipped at will) would grade the
challenger by its own lies. The frozen set is written once, when the model's first version
is registered, from that run's test reviews that did not come from feedback; it is an
artifact of that run, and every later version records the run it came from (tag
`frozen_evaluation_run`), so the lineage keeps one yardstick. Reviews are kept as raw text
and turned into features when they are scored, so a new feature contract still reads them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from libs.models.training.data import LABEL_COLUMN, labelled_features
from libs.models.training.settings import TrainingSettings
from libs.models.training.tracking import client_for

FROZEN_TAG = "frozen_evaluation_run"
"""Tag of the registered model and of each of its versions: the run holding the frozen set."""
FROZEN_ARTIFACT = "frozen_evaluation"
FROZEN_FILE = "reviews.parquet"
FROZEN_COLUMNS = ("reviewText", "summary", LABEL_COLUMN)
"""What is frozen: the raw review, its summary and the true stars."""


def frozen_run(settings: TrainingSettings) -> str | None:
    """The run holding the frozen set of `settings.model_name` (None: none written yet)."""
    try:
        model = mlflow.MlflowClient(settings.tracking_uri()).get_registered_model(settings.model_name)
    except MlflowException:
        return None
    return model.tags.get(FROZEN_TAG) or None


def load_frozen_set(settings: TrainingSettings, into: Path) -> pd.DataFrame | None:
    """The frozen set as labelled features (libs.features of today's contract), or None."""
    run_id = frozen_run(settings)
    if run_id is None:
        return None
    local = client_for(settings).download_artifacts(run_id, f"{FROZEN_ARTIFACT}/{FROZEN_FILE}", str(into))
    return labelled_features(pd.read_parquet(local))


def freeze(settings: TrainingSettings, run_id: str, reviews: pd.DataFrame) -> int:
    """Writes `reviews` (raw, none from feedback) as the frozen set of the model, kept in run
    `run_id`, unless the model already has one: a lineage has one frozen set, written once.
    Returns the rows frozen (0 when a set existed)."""
    if frozen_run(settings) is not None:
        return 0
    missing = [column for column in ("reviewText", LABEL_COLUMN) if column not in reviews]
    if missing:
        raise ValueError(f"reviews to freeze lack columns {missing}")
    rows = reviews.reindex(columns=list(FROZEN_COLUMNS)).reset_index(drop=True)  # summary: optional
    if rows.empty:
        raise ValueError("no reviews to freeze: the test split holds only feedback")
    client = client_for(settings)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / FROZEN_FILE
        rows.to_parquet(path, index=False)
        client.log_artifact(run_id, str(path), FROZEN_ARTIFACT)
    client.set_registered_model_tag(settings.model_name, FROZEN_TAG, run_id)
    return len(rows)
