"""Flyte workflows of the Kindle review rater: the training pipeline and the drift check.

`training.py` (`training_pipeline`) and `drift.py` (`drift_check`, its cron LaunchPlan)
are the entry points; every other module is one stage. See workflows/README.md.
"""
