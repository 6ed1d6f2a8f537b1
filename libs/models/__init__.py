"""libs.models: what serving needs of a model. Training is `libs.models.training`.

Public API:

- `kinds`: `ModelKind`, `LABELS` (stars 1..5, the probability columns), `sentiment_of`.
- `bundle`: `ModelBundle` (predict_proba, predict_features, explain, metadata),
  `save_bundle` / `load_bundle` (skops, every file checked), `BundleError`.
- `components`: the classes a fitted scikit-learn model is made of (`StarPipeline` with
  its `explain`, `FeatureMatrix`, `BalancedEpochMLP`), `ExplanationUnavailable`.
- `registry`: `MODEL_NAME`, the `CHAMPION` and `PREVIOUS` aliases, `RegistrySettings`.
- `transformer` (Bazel `//libs/models:transformer`, needs torch): the fine-tuned
  transformer kind. `pyfunc` (`//libs/models:pyfunc`, needs MLflow): the bundle as an
  MLflow pyfunc model.
"""
