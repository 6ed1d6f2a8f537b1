"""Turns the hash-checked lock file into a Bazel repository of Python packages.

Run by the `pip_repository` rule (pip_repository.bzl) with the host Python. rules_python
cannot be fetched offline, so this is the small part of it the monorepo needs:

1. Every pinned distribution is built or downloaded once as a wheel into a wheelhouse
   under the user's cache (`pip wheel --require-hashes`), shared by every clone and by
   `tools/setup.sh`'s virtual environment.
2. Each wheel is unpacked into its own folder, `site/<name>-<version>/`, so a target
   sees only the distributions it declares (plus their dependencies).
3. A BUILD file exposes one `py_library` per distribution whose deps are the
   distribution's own requirements (markers evaluated for this interpreter, extras
   honoured), flattened so dependency cycles between distributions cannot hurt.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path

from pip._vendor.packaging.markers import default_environment
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
from pip._vendor.packaging.version import Version


@dataclass
class Pin:
    """One `name==version` entry of the lock with its hash lines."""

    name: str
    version: str
    text: str
    extras: set[str] = field(default_factory=set)


def parse_lock(path: Path) -> dict[str, Pin]:
    """Reads a pip-style lock (`name==version \\` followed by `--hash=` lines)."""
    pins: dict[str, Pin] = {}
    entry: list[str] = []
    for raw in [*path.read_text().splitlines(), ""]:
        line = raw.strip()
        if line.startswith("#"):
            continue
        if entry and not line.startswith("--hash"):
            requirement = Requirement(entry[0].rstrip("\\ ").strip())
            (spec,) = requirement.specifier
            name = canonicalize_name(requirement.name)
            pins[name] = Pin(name, spec.version, "\n".join(entry))
            entry = []
        if line and not line.startswith("--"):
            entry = [line]
        elif line.startswith("--hash") and entry:
            entry.append(line)
    return pins


def requested_extras(requirements_in: Path) -> dict[str, set[str]]:
    """Extras asked for directly (`bentoml[grpc]`), which pull in more distributions."""
    extras: dict[str, set[str]] = {}
    for raw in requirements_in.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            extras.setdefault(canonicalize_name(requirement.name), set()).update(requirement.extras)
    return extras


def wheel_index(wheelhouse: Path) -> dict[tuple[str, Version], Path]:
    index: dict[tuple[str, Version], Path] = {}
    for wheel in wheelhouse.glob("*.whl"):
        name, version, _, _ = parse_wheel_filename(wheel.name)
        index[(canonicalize_name(name), version)] = wheel
    return index


def ensure_wheels(pins: dict[str, Pin], wheelhouse: Path, find_links: list[str]) -> dict[str, Path]:
    """Fetches (hash-checked) only the wheels the wheelhouse does not hold yet."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    index = wheel_index(wheelhouse)
    missing = [pin for pin in pins.values() if (pin.name, Version(pin.version)) not in index]
    if missing:
        request = wheelhouse / f".request-{os.getpid()}.txt"
        request.write_text("\n".join(pin.text for pin in missing) + "\n")
        links = [arg for link in find_links if Path(link).is_dir() for arg in ("--find-links", link)]
        command = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--require-hashes",
            "--no-deps",
            "--disable-pip-version-check",
            "-w",
            str(wheelhouse),
            *links,
            "-r",
            str(request),
        ]
        print(f"fetching {len(missing)} wheels into {wheelhouse}", file=sys.stderr)
        try:
            subprocess.run(command, check=True)
        finally:
            request.unlink(missing_ok=True)
        index = wheel_index(wheelhouse)
    found: dict[str, Path] = {}
    for pin in pins.values():
        wheel = index.get((pin.name, Version(pin.version)))
        if wheel is None:
            sys.exit(f"pip produced no wheel for {pin.name}=={pin.version}")
        found[pin.name] = wheel
    return found


def unpack(wheel: Path, target: Path) -> None:
    """Installs a wheel the way pip --target would, without running any code.

    `<dist>.data/purelib|platlib` merge into the root and `.data/scripts` go to
    `bin/` (where tools such as ruff look for their binary in a --target install).
    Unpacking happens in a temporary folder renamed into place, so an interrupted
    fetch never leaves a half-unpacked package that looks complete.
    """
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            parts = info.filename.split("/")
            if parts[0].endswith(".data") and len(parts) > 2:
                kind, rest = parts[1], parts[2:]
                if kind in ("purelib", "platlib"):
                    parts = rest
                elif kind == "scripts":
                    parts = ["bin", *rest]
                else:
                    continue
            if info.is_dir() or not parts[-1]:
                continue
            destination = partial.joinpath(*parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(destination, "wb") as sink:
                shutil.copyfileobj(source, sink)
            mode = (info.external_attr >> 16) & 0o777
            if mode & 0o111 or parts[0] == "bin":
                destination.chmod(0o755)
    partial.rename(target)


def metadata_requirements(root: Path) -> list[Requirement]:
    (metadata,) = root.glob("*.dist-info/METADATA")
    headers = HeaderParser().parsestr(metadata.read_text(encoding="utf-8", errors="replace"))
    return [Requirement(value) for value in headers.get_all("Requires-Dist") or []]


def dependency_closure(
    roots: dict[str, Path], extras: dict[str, set[str]], pins: dict[str, Pin]
) -> dict[str, list[str]]:
    """Every distribution each distribution needs at run time, transitively."""
    environment = default_environment()
    requirements = {name: metadata_requirements(root) for name, root in roots.items()}

    def direct(name: str, wanted: frozenset[str]) -> set[tuple[str, frozenset[str]]]:
        edges = set()
        for requirement in requirements[name]:
            dep = canonicalize_name(requirement.name)
            if dep not in pins:
                continue
            active = requirement.marker is None or any(
                requirement.marker.evaluate({**environment, "extra": extra}) for extra in ("", *wanted)
            )
            if active:
                edges.add((dep, frozenset(requirement.extras)))
        return edges

    closure: dict[str, list[str]] = {}
    for name in roots:
        seen: set[tuple[str, frozenset[str]]] = set()
        stack = [(name, frozenset(extras.get(name, set())))]
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            stack.extend(direct(*node))
        closure[name] = sorted({dep for dep, _ in seen})
    return closure


def build_file(closure: dict[str, list[str]], folders: dict[str, str], interpreter: str) -> str:
    lines = [
        "# Generated by //third_party/python:wheel_installer.py from the lock file. Do not edit.",
        'load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")',
        "",
        "py_runtime(",
        '    name = "python3_runtime",',
        f'    interpreter_path = "{interpreter}",',
        '    python_version = "PY3",',
        ")",
        "",
        'py_runtime_pair(name = "runtime_pair", py3_runtime = ":python3_runtime")',
        "",
        "toolchain(",
        '    name = "python_toolchain",',
        '    toolchain = ":runtime_pair",',
        '    toolchain_type = "@bazel_tools//tools/python:toolchain_type",',
        ")",
        "",
    ]
    for name, folder in sorted(folders.items()):
        lines += [
            "py_library(",
            f'    name = "_files_{name}",',
            f'    data = ["site/{folder}"],',
            f'    imports = ["site/{folder}"],',
            ")",
            "",
        ]
    for name, deps in sorted(closure.items()):
        labels = ", ".join(f'":_files_{dep}"' for dep in deps)
        lines += [
            "py_library(",
            f'    name = "{name}",',
            f"    deps = [{labels}],",
            '    visibility = ["//visibility:public"],',
            ")",
            "",
        ]
    return "\n".join(lines)


REQUIREMENTS_BZL = '''"""Generated: maps a distribution name to its py_library in this repository."""

def requirement(name):
    """The label of a pinned distribution, e.g. requirement("scikit-learn")."""
    normalized = name.lower().replace("_", "-").replace(".", "-")
    return "@{repo}//:" + normalized
'''


def install_bazel_repo(args: argparse.Namespace, pins: dict[str, Pin], wheels: dict[str, Path]) -> None:
    site = args.repo_dir / "site"
    site.mkdir(exist_ok=True)
    folders: dict[str, str] = {}
    for name, wheel in sorted(wheels.items()):
        folder = re.sub(r"[^A-Za-z0-9._-]", "_", f"{name}-{pins[name].version}")
        if not (site / folder).is_dir():
            unpack(wheel, site / folder)
        folders[name] = folder
    extras = requested_extras(args.requirements_in)
    closure = dependency_closure({n: site / f for n, f in folders.items()}, extras, pins)
    (args.repo_dir / "BUILD.bazel").write_text(build_file(closure, folders, args.interpreter))
    (args.repo_dir / "requirements.bzl").write_text(REQUIREMENTS_BZL.replace("{repo}", args.repo_name))


def install_venv(args: argparse.Namespace, wheels: dict[str, Path]) -> None:
    """Installs the same wheels into a virtual environment for the CLIs (pyflyte, bentoml, mlflow)."""
    command = [
        str(args.venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-index",
        "--disable-pip-version-check",
        *(str(wheel) for wheel in sorted(wheels.values())),
    ]
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lock", type=Path, required=True)
    parser.add_argument("--wheelhouse", type=Path, required=True)
    parser.add_argument("--find-links", action="append", default=[])
    targets = parser.add_subparsers(dest="target", required=True)
    repo = targets.add_parser("bazel-repo", help="lay out an external repository for Bazel")
    repo.add_argument("--requirements-in", type=Path, required=True)
    repo.add_argument("--repo-dir", type=Path, required=True)
    repo.add_argument("--repo-name", required=True)
    repo.add_argument("--interpreter", required=True)
    venv = targets.add_parser("venv", help="install into an existing virtual environment")
    venv.add_argument("--venv", type=Path, required=True)
    args = parser.parse_args()

    pins = parse_lock(args.lock)
    wheels = ensure_wheels(pins, args.wheelhouse, args.find_links)
    if args.target == "bazel-repo":
        install_bazel_repo(args, pins, wheels)
    else:
        install_venv(args, wheels)


if __name__ == "__main__":
    main()
