"""`heap.settle`: what is alive is frozen out of the collector's walks, and a later settle
still collects a swapped-out object's reference cycles."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from services import heap


class Champion:
    """Stands for a loaded bundle: an object graph with a reference cycle."""

    def __init__(self) -> None:
        self.parts = {"self": self}


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    """Leaves the interpreter as the test found it (nothing frozen)."""
    yield
    gc.unfreeze()


def test_settle_freezes_what_is_alive() -> None:
    gc.unfreeze()
    champion = Champion()
    heap.settle()
    assert gc.get_freeze_count() > 0
    # A frozen object is in no generation the collector walks.
    assert not any(champion is tracked for tracked in gc.get_objects())


def test_a_swapped_out_champion_in_a_cycle_is_collected_at_the_next_settle() -> None:
    old = Champion()
    gone = weakref.ref(old)
    heap.settle()
    old = Champion()  # the swap: the first one is garbage now, held only by its cycle
    gc.collect()
    assert gone() is not None, "frozen, the cycle waits for the next settle"
    heap.settle()
    assert gone() is None
    assert old is not None
