"""A training run SIGKILLed mid-HPO resumes: the re-run keeps every finished trial and runs
only the ones still owed. The killed run is a real child process running `search_kind` with
the product's default SQLite Optuna storage in its output folder."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from libs.features import Tfidf
from libs.models.kinds import ModelKind
from libs.models.training.data import LABEL_COLUMN, fingerprint
from libs.models.training.settings import TrainingSettings
from libs.models.training.stages import search_kind, study_name
from libs.models.training.tuning import FINISHED
from tests.fixtures.processes import sigkill_when

N_TRIALS = 5
KILL_AFTER = 2
PER_STAR = 40  # a small training split: each trial costs seconds, not tens of seconds

TRAINING = """
import sys
from pathlib import Path
import pandas as pd
from libs.features import Tfidf
from libs.models.training.settings import TrainingSettings
from libs.models.training.stages import search_kind

work = Path(sys.argv[1])
settings = TrainingSettings(kinds="logreg", trials=int(sys.argv[2]), timeout_s=0, output_dir=work)
tfidf = Tfidf.load(work / "tfidf.json")
search_kind("logreg", pd.read_parquet(work / "train.parquet"), pd.read_parquet(work / "val.parquet"),
            tfidf, tfidf, settings, work / "candidates")
"""


def finished(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # the child has not created the study yet
        return []
    return study.get_trials(deepcopy=False, states=FINISHED)


def test_a_killed_hpo_run_resumes_with_only_the_remaining_trials(
    tmp_path: Path, train_df: pd.DataFrame, val_df: pd.DataFrame, tfidf: Tfidf
) -> None:
    train_df.groupby(LABEL_COLUMN).head(PER_STAR).to_parquet(tmp_path / "train.parquet")
    val_df.to_parquet(tmp_path / "val.parquet")
    tfidf.save(tmp_path / "tfidf.json")
    train, val = pd.read_parquet(tmp_path / "train.parquet"), pd.read_parquet(tmp_path / "val.parquet")
    settings = TrainingSettings(kinds="logreg", trials=N_TRIALS, timeout_s=0, output_dir=tmp_path)
    name = study_name(ModelKind.LOGREG, settings, fingerprint(train))
    storage = settings.storage_url(name)

    sigkill_when(
        TRAINING,
        [str(tmp_path), str(N_TRIALS)],
        lambda: len(finished(storage, name)) >= KILL_AFTER,
        poll_s=0.1,
    )
    before = {t.number: (t.state, t.values, t.params) for t in finished(storage, name)}
    assert KILL_AFTER <= len(before) < N_TRIALS, before

    vocabulary = Tfidf.load(tmp_path / "tfidf.json")
    trained = search_kind(
        ModelKind.LOGREG, train, val, vocabulary, vocabulary, settings, tmp_path / "candidates"
    )

    study = optuna.load_study(study_name=name, storage=storage)
    after = {t.number: (t.state, t.values, t.params) for t in study.get_trials(states=FINISHED)}
    assert trained.trials == len(after) == N_TRIALS
    assert {n: after[n] for n in before} == before  # finished trials reused as they were
    rerun = sorted(set(after) - set(before))
    assert len(rerun) == N_TRIALS - len(before) and min(rerun) > max(before)
    # The trial the kill interrupted stays RUNNING in the storage and is not counted as done.
    crashed = study.get_trials(states=(TrialState.RUNNING,))
    assert len(crashed) <= 1 and all(t.number not in after for t in crashed)
