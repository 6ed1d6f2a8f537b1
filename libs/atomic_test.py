"""SIGKILL mid-write: a real child process writing a JSON artefact atomically is killed once
its hidden temporary file has data in it. The previous file must be intact, the leftover
hidden from lookups by name, and the next write must succeed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from libs.atomic import write_json
from tests.fixtures.processes import kill_mid_write

BIG_JSON = """
import sys
from pathlib import Path
from libs.atomic import write_json
write_json(Path(sys.argv[1]), {"values": [i / 7 for i in range(4_000_000)]})
"""


def test_a_json_write_killed_mid_way_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text(json.dumps({"values": [1, 2, 3]}))
    leftovers = kill_mid_write(BIG_JSON, str(target), tmp_path)
    assert leftovers and all(p.name.startswith(".state.json.") for p in leftovers), leftovers
    with pytest.raises(ValueError):
        json.loads(leftovers[0].read_text())  # the leftover really is half a file
    assert json.loads(target.read_text()) == {"values": [1, 2, 3]}
    assert sorted(tmp_path.glob("*.json")) == [target]

    write_json(target, {"values": [4]})
    assert json.loads(target.read_text()) == {"values": [4]}
