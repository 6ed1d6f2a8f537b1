"""`pyflyte --pkgs workflows package --image ...` works offline and carries what a cluster needs."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

from flyteidl.admin import launch_plan_pb2, task_pb2

ROOT = Path(__file__).absolute().parents[1]
PYFLYTE = "from flytekit.clis.sdk_in_container.pyflyte import main; main()"


def test_package_builds_offline_with_spark_task_and_cron_launch_plan(tmp_path: Path) -> None:
    out = tmp_path / "flyte-package.tgz"
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    env.pop("KINDLE_IMAGE", None)
    result = subprocess.run(
        [sys.executable, "-c", PYFLYTE, "--pkgs", "workflows", "package", "--image",
         "registry.example/kindle-workflows:1", "-o", str(out), "--force"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    with tarfile.open(out) as archive:
        members = {member.name: archive.extractfile(member).read() for member in archive if member.isfile()}
    names = " ".join(members)
    for entity in (
        "training_pipeline",
        "drift_check",
        "spark_etl",
        "search_all_kinds",
        "kindle_drift_check_daily",
    ):
        assert entity in names, entity

    spec = task_pb2.TaskSpec()
    spec.ParseFromString(next(v for k, v in members.items() if "spark_etl" in k))
    spark = spec.template
    assert spark.type == "spark"
    assert spark.container.image == "registry.example/kindle-workflows:1"
    assert spark.custom["sparkConf"]["spark.sql.session.timeZone"] == "UTC"
    assert "spark.driver.host" not in spark.custom["sparkConf"]  # nothing local-only ships
    assert spark.metadata.discoverable and spark.metadata.discovery_version.startswith("etl-wf")

    plan = launch_plan_pb2.LaunchPlan()
    plan.ParseFromString(next(v for k, v in members.items() if "kindle_drift_check_daily" in k))
    assert plan.spec.entity_metadata.schedule.cron_schedule.schedule


def test_drift_check_settings_from_a_partial_json_object_keep_the_other_defaults() -> None:
    """What `pyflyte run workflows/drift.py drift_check --settings '{...}'` hands the workflow."""
    from flytekit.interaction.click_types import JsonParamType

    from workflows.drift import drift_check
    from workflows.settings import PipelineSettings

    assert drift_check.python_interface.inputs["settings"] is PipelineSettings
    given = JsonParamType(PipelineSettings).convert('{"kinds": "logreg", "trials": 3}', None, None)
    assert given == PipelineSettings(kinds="logreg", trials=3)
    assert (given.timeout_s, given.seed) == (PipelineSettings().timeout_s, PipelineSettings().seed)
