"""The Bento's Python environment: pinned like the lock, complete, and without training libraries."""

from __future__ import annotations

import ast
import sys
from importlib import metadata
from pathlib import Path

import yaml

from services.packaging import BENTOFILE, REPO_ROOT, _bentofile_for, _normalise, lock_pins

FIRST_PARTY = {"libs", "services", "tests", "workflows", "tools"}
# What a server process imports: the service module, and what its startup hook imports
# lazily (the bundle loader, the drift monitor and batch writer).
SERVING_ROOTS = ("services.service", "libs.models.bundle", "libs.drift.live", "libs.production.batches")


def test_bentofile_pins_match_the_lock() -> None:
    pins = lock_pins()
    for package in yaml.safe_load(BENTOFILE.read_text())["python"]["packages"]:
        name, _, version = package.partition("==")
        assert pins.get(_normalise(name)) == version, f"{package} vs lock {pins.get(_normalise(name))}"


def test_closure_is_pinned_and_light() -> None:
    pins = lock_pins()
    packages = dict(p.split("==") for p in _bentofile_for({"scikit-learn": "1.9.1"})["python"]["packages"])
    assert {"scikit-learn", "numpy", "bentoml", "grpcio-health-checking"} <= set(packages)
    for heavy in ("torch", "pyspark", "mlflow", "flytekit", "optuna", "matplotlib"):
        assert heavy not in packages
    assert all(pins.get(name, version) == version for name, version in packages.items())
    # Pinned though this interpreter skips it: redis needs it below 3.11.3 (Debian 12 has 3.11.2).
    assert packages["async-timeout"] == pins["async-timeout"]
    assert "torch" in dict(p.split("==") for p in _bentofile_for({"torch": "2"})["python"]["packages"])


def test_a_transformer_champion_brings_onnxruntime_not_torch() -> None:
    """A transformer bundle records the libraries its ONNX export needs, and the Bento gets those."""
    from libs.models.bundle import library_versions

    packages = dict(
        p.split("==") for p in _bentofile_for(library_versions("distilbert"))["python"]["packages"]
    )
    assert {"onnxruntime", "tokenizers"} <= set(packages)
    assert not {"torch", "transformers"} & set(packages)


def test_the_bento_builds_on_the_debian_base_or_on_bentomls_default(tmp_path: Path) -> None:
    """The base image `bentoml containerize` starts FROM, with and without --bentoml-base."""
    from bentoml._internal.bento.build_config import CondaOptions, DockerOptions
    from bentoml._internal.container.generate import get_templates_variables

    def base_image(bentoml_base: bool) -> str:
        docker = DockerOptions(**_bentofile_for(None, bentoml_base)["docker"]).with_defaults()
        return get_templates_variables(docker, CondaOptions(), tmp_path)["__base_image__"]

    assert base_image(False) == "localhost/kindle-base:bookworm"  # tools/image_base.sh's tag
    assert base_image(True) == f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"


def test_closure_holds_bentomls_grpc_extra() -> None:
    """serve-grpc needs what `bentoml[grpc]` adds, though the service imports none of it:
    BentoML asks for the gRPC instrumentation's version when the server starts."""
    from packaging.requirements import Requirement

    packages = {p.split("==")[0] for p in _bentofile_for(None)["python"]["packages"]}
    extra = [Requirement(line) for line in metadata.requires("bentoml") or []]
    grpc = {_normalise(r.name) for r in extra if r.marker and r.marker.evaluate({"extra": "grpc"})}
    assert "opentelemetry-instrumentation-grpc" in grpc and grpc <= packages, grpc - packages


def _module_file(module: str) -> Path | None:
    base = REPO_ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_level_imports(path: Path) -> set[str]:
    """Dotted names imported when the module is imported (not inside functions or TYPE_CHECKING)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            continue
        nodes = [node] if isinstance(node, ast.ClassDef) else list(ast.walk(node))
        if isinstance(node, ast.ClassDef):  # class bodies run at import, methods do not
            nodes = [n for stmt in node.body if not isinstance(stmt, ast.FunctionDef) for n in ast.walk(stmt)]
        for child in nodes:
            if isinstance(child, ast.Import):
                names |= {alias.name for alias in child.names}
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names.add(child.module)
                names |= {f"{child.module}.{alias.name}" for alias in child.names}
    return names


def _third_party_imports_of_the_service() -> dict[str, str]:
    """Top-level third-party module -> first-party module importing it, over everything
    `services.service` imports (transitively, first-party modules followed)."""
    pending, seen, third_party = list(SERVING_ROOTS), set(), {}
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        pending += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run too
        path = _module_file(module)
        if path is None:
            continue
        for name in _module_level_imports(path):
            top = name.split(".")[0]
            if top in FIRST_PARTY:
                if _module_file(name) is not None:
                    pending.append(name)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.setdefault(top, module)
    return third_party


def test_every_import_of_the_service_is_packaged() -> None:
    """What `bentoml serve` imports must be installed in the container (e.g. libs importing
    matplotlib at module level), and nothing from training (mlflow, optuna, torch) may be."""
    packaged = set(dict(p.split("==") for p in _bentofile_for(None)["python"]["packages"]))
    owners = metadata.packages_distributions()
    imports = _third_party_imports_of_the_service()
    assert {"bentoml", "numpy", "sklearn"} <= set(imports)
    missing = {
        module: importer
        for module, importer in imports.items()
        if not {_normalise(d) for d in owners.get(module, [module])} & packaged
    }
    assert not missing, f"imported when serving but not in the Bento: {missing}"
    assert not {"mlflow", "optuna", "torch", "pyspark", "flytekit", "matplotlib"} & set(imports)
