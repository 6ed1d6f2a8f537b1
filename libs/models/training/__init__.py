"""libs.models.training: building, searching, evaluating, tracking and publishing models.

Public API:

- `stages`: the training run as typed stages (`search_kind`, `select_champion`,
  `finish_bundle`, `decide`, `publish`) and `train`, the same stages in one process.
- `settings.TrainingSettings`: every knob of a training run (`KINDLE_*` variables).
- `selection.SelectionMetric`: the metric every choice of a run is made by, and its direction.
- `tracking`: MLflow configuration, `register` and `promote` (aliases only move forwards).
- `estimators.build_estimator`, `tuning.run_study`, `evaluation.evaluate`: the parts.
"""
