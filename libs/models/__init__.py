"""libs.models: model kinds, Optuna HPO, evaluation, MLflow tracking/registry, the model bundle.

The scikit-learn path (`libs.models`, Bazel `//libs/models`) never imports torch; the
fine-tuned transformer lives in `libs.models.distilbert` (Bazel `//libs/models:distilbert`)
and is imported only when a `distilbert` model is built or loaded.

Entry points: `training.train_kind` / `training.train_and_register`, `bundle.save_bundle` /
`bundle.load_bundle`, `tracking.register_champion`.
"""
