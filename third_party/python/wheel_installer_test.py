"""The lock reader and wheel unpacker behind the @pypi repository."""

import zipfile
from pathlib import Path

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
