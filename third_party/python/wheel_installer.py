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

Optional requirements (torch, pinned in torch.txt and not in the lock) are installed
only from a wheel that a `--find-links` folder holds, matches the pin, suits this
interpreter and has a sha256 the pin file lists. Without one, the repository's target
for it fails with a message when built, and `requirements.bzl` says it is missing
(`TORCH_AVAILABLE`, `optional_tags`), so the targets that need it can leave `//...`.
The `optional` command installs the same pins into a virtual environment, from such a
wheel or from an index (docs/torch.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
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
from pip._vendor.packaging.specifiers import SpecifierSet
from pip._vendor.packaging.tags import Tag, sys_tags
from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
from pip._vendor.packaging.version import Version


@dataclass
class Pin:
    """One `name==version` entry of the lock with its hash lines."""

    name: str
    version: str
    text: str
    extras: set[str] = field(default_factory=set)

    @property
    def hashes(self) -> set[str]:
        return set(re.findall(r"--hash=sha256:([0-9a-f]{64})", self.text))


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


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def local_wheel(
    pin: Pin, folders: list[str], supported: set[Tag] | None = None
) -> tuple[Path | None, list[str]]:
    """The wheel of `pin` that one of `folders` holds, if it can be installed here.

    It must match the pin's version (a local build such as `2.13.0+cpu` matches
    `==2.13.0`), suit this interpreter and platform, and have a sha256 the pin lists.
    The second value says why each other candidate was passed over.
    """
    supported = set(sys_tags()) if supported is None else supported
    wanted = SpecifierSet(f"=={pin.version}")
    notes: list[str] = []
    for folder in folders:
        for wheel in sorted(Path(folder).glob("*.whl")) if Path(folder).is_dir() else []:
            try:
                name, version, _, tags = parse_wheel_filename(wheel.name)
            except ValueError:
                continue
            if canonicalize_name(name) != pin.name or not wanted.contains(version, prereleases=True):
                continue
            if not set(tags) & supported:
                notes.append(f"{wheel}: not for this interpreter or platform")
            elif (digest := sha256(wheel)) not in pin.hashes:
                notes.append(f"{wheel}: its sha256 {digest} is not listed for {pin.name}=={pin.version}")
            else:
                return wheel, notes
    return None, notes


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


def build_file(
    closure: dict[str, list[str]],
    folders: dict[str, str],
    interpreter: str,
    missing: dict[str, str] | None = None,
) -> str:
    """`missing` maps an optional distribution that is not installed to why."""
    missing = missing or {}
    lines = [
        "# Generated by //third_party/python:wheel_installer.py from the lock file. Do not edit.",
        'load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")',
        'load(":unavailable.bzl", "unavailable")',
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
    for name, why in sorted(missing.items()):
        lines += [
            "unavailable(",
            f'    name = "{name}",',
            f"    message = {json.dumps(why)},",
            '    visibility = ["//visibility:public"],',
            ")",
            "",
        ]
    return "\n".join(lines)


REQUIREMENTS_BZL = '''"""Generated: maps a distribution name to its py_library in this repository."""

# Whether each optional requirement (third_party/python/torch.txt) is installed here.
AVAILABLE = {available}
{flags}
def requirement(name):
    """The label of a pinned distribution, e.g. requirement("scikit-learn")."""
    normalized = name.lower().replace("_", "-").replace(".", "-")
    return "@{repo}//:" + normalized

def optional_tags(*names):
    """The tags of a target that needs optional requirements, e.g. optional_tags("torch").

    `requires-<name>` for each; and `manual` where one is not installed, so that `//...`
    leaves the target out instead of failing on it.
    """
    tags = ["requires-" + name for name in names]
    if not all([AVAILABLE[name] for name in names]):
        tags.append("manual")
    return tags
'''

UNAVAILABLE_BZL = '''"""Generated: the target of an optional requirement that is not installed."""

def _unavailable_impl(ctx):
    fail(ctx.attr.message)

unavailable = rule(
    implementation = _unavailable_impl,
    attrs = {"message": attr.string()},
)
'''


def requirements_bzl(repo_name: str, available: dict[str, bool]) -> str:
    flags = "".join(
        f"{re.sub(r'[^A-Z0-9]', '_', name.upper())}_AVAILABLE = {available[name]}\n"
        for name in sorted(available)
    )
    listed = "{" + ", ".join(f'"{name}": {available[name]}' for name in sorted(available)) + "}"
    text = REQUIREMENTS_BZL.replace("{repo}", repo_name)
    return text.replace("{available}", listed).replace("{flags}", flags)


def install_bazel_repo(
    args: argparse.Namespace, pins: dict[str, Pin], wheels: dict[str, Path], optional: dict[str, Pin]
) -> None:
    pins, wheels, missing = dict(pins), dict(wheels), {}
    for name, pin in sorted(optional.items()):
        wheel, notes = local_wheel(pin, args.find_links)
        if wheel is None:
            folders = ", ".join(args.find_links) or "none"
            missing[name] = (
                f"{name}=={pin.version} is not installed in @{args.repo_name}: no wheel folder (searched: "
                f"{folders}) holds its wheel with a listed sha256. Targets that need it are tagged manual, "
                "out of //...; see docs/torch.md."
            )
            print(" ".join([missing[name], *notes]), file=sys.stderr)
        else:
            pins[name] = Pin(name, str(parse_wheel_filename(wheel.name)[1]), pin.text)
            wheels[name] = wheel
    site = args.repo_dir / "site"
    site.mkdir(exist_ok=True)
    layout: dict[str, str] = {}
    for name, wheel in sorted(wheels.items()):
        folder = re.sub(r"[^A-Za-z0-9._-]", "_", f"{name}-{pins[name].version}")
        if not (site / folder).is_dir():
            unpack(wheel, site / folder)
        layout[name] = folder
    extras = requested_extras(args.requirements_in)
    closure = dependency_closure({n: site / f for n, f in layout.items()}, extras, pins)
    (args.repo_dir / "BUILD.bazel").write_text(build_file(closure, layout, args.interpreter, missing))
    (args.repo_dir / "unavailable.bzl").write_text(UNAVAILABLE_BZL)
    available = {name: name not in missing for name in optional}
    (args.repo_dir / "requirements.bzl").write_text(requirements_bzl(args.repo_name, available))


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


# Where `optional --build cpu` looks when no wheel folder holds the pinned wheel.
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def install_optional_venv(args: argparse.Namespace, pin: Pin) -> str | None:
    """Installs an optional pin into a virtual environment; returns why not, if it failed.

    `cpu`: the hash-checked wheel of a `--find-links` folder, offline, else the pinned
    version from PyTorch's CPU index; the pin's dependencies are in the lock, so no others
    are installed. `cuda`: exactly the pinned version (`===`, never a `+cpu` build a
    configured wheel folder may hold) from the default index, with its CUDA libraries.
    """
    python = str(args.venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    online = ["--timeout", "20", "--retries", "1"]
    if args.build == "cpu":
        wheel, notes = local_wheel(pin, args.find_links)
        if wheel is not None:
            command = [*pip, "--no-deps", "--no-index", "--force-reinstall", str(wheel)]
            where = str(wheel)
        else:
            command = [
                *pip,
                *online,
                "--no-deps",
                "--force-reinstall",
                "--index-url",
                args.cpu_index,
                f"{pin.name}=={pin.version}",
            ]
            folders = ", ".join(args.find_links) or "no wheel folder"
            where = f"{args.cpu_index} (no matching wheel in {folders})"
        for note in notes:
            print(f"skipped {note}", file=sys.stderr)
    else:
        command, where = [*pip, *online, f"{pin.name}==={pin.version}"], "the default index"
    print(f"installing {pin.name}=={pin.version} ({args.build}) from {where}", file=sys.stderr)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")] or ["pip failed"]
        return f"{pin.name}=={pin.version} ({args.build}) could not be installed from {where}: {errors[-1]}"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--find-links", action="append", default=[])
    targets = parser.add_subparsers(dest="target", required=True)
    repo = targets.add_parser("bazel-repo", help="lay out an external repository for Bazel")
    venv = targets.add_parser("venv", help="install the lock into an existing virtual environment")
    for command in (repo, venv):
        command.add_argument("--lock", type=Path, required=True)
        command.add_argument("--wheelhouse", type=Path, required=True)
    repo.add_argument("--requirements-in", type=Path, required=True)
    repo.add_argument("--repo-dir", type=Path, required=True)
    repo.add_argument("--repo-name", required=True)
    repo.add_argument("--interpreter", required=True)
    repo.add_argument(
        "--optional", type=Path, action="append", default=[], help="pin file of optional requirements"
    )
    venv.add_argument("--venv", type=Path, required=True)
    optional = targets.add_parser("optional", help="install an optional pin into a virtual environment")
    optional.add_argument("--pins", type=Path, required=True)
    optional.add_argument("--venv", type=Path, required=True)
    optional.add_argument("--build", choices=["cpu", "cuda"], default="cpu")
    optional.add_argument(
        "--cpu-index",
        default=PYTORCH_CPU_INDEX,
        help="index of CPU builds, used without a matching local wheel",
    )
    args = parser.parse_args()

    if args.target == "optional":
        wanted = parse_lock(args.pins)
        failures = [why for pin in wanted.values() if (why := install_optional_venv(args, pin))]
        if failures:
            print("; ".join(failures), file=sys.stderr)
            sys.exit(3)
        return
    pins = parse_lock(args.lock)
    wheels = ensure_wheels(pins, args.wheelhouse, args.find_links)
    if args.target == "bazel-repo":
        optional_pins = {name: pin for path in args.optional for name, pin in parse_lock(path).items()}
        install_bazel_repo(args, pins, wheels, optional_pins)
    else:
        install_venv(args, wheels)


if __name__ == "__main__":
    main()
