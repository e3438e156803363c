"""The encounter and worklist-item state machines, as pure functions."""

from __future__ import annotations

import pytest

from novaza_gateway.clinical import encounters, orders
from novaza_gateway.clinical.encounters import EncounterEvent as E
from novaza_gateway.clinical.errors import InvalidTransition


def walk(*events: E) -> str | None:
    state: str | None = None
    for event in events:
        state = encounters.next_status(state, event)
    return state


def test_encounter_happy_paths_and_repeats() -> None:
    assert walk(E.PREADMIT, E.ADMIT, E.TRANSFER, E.TRANSFER, E.DISCHARGE) == "discharged"
    assert walk(E.REGISTER, E.UPDATE, E.DISCHARGE, E.DISCHARGE) == "discharged"
    assert walk(E.ADMIT, E.CANCEL_ADMIT, E.CANCEL_ADMIT) == "canceled"
    assert walk(E.ADMIT, E.TRANSFER, E.CANCEL_TRANSFER) == "admitted"
    assert walk(E.ADMIT, E.DISCHARGE, E.CANCEL_DISCHARGE) == "admitted"
    assert walk(E.TRANSFER) == "transferred"  # a visit the gateway joined midway
    assert walk(E.UPDATE) == "admitted"


@pytest.mark.parametrize(
    "events",
    [
        (E.CANCEL_ADMIT,),
        (E.ADMIT, E.DISCHARGE, E.TRANSFER),
        (E.ADMIT, E.CANCEL_ADMIT, E.ADMIT),
        (E.ADMIT, E.DISCHARGE, E.CANCEL_TRANSFER),
        (E.ADMIT, E.PREADMIT),
    ],
)
def test_encounter_invalid_moves(events: tuple[E, ...]) -> None:
    with pytest.raises(InvalidTransition):
        walk(*events)


def test_worklist_status_moves() -> None:
    step = orders.next_status
    assert step("scheduled", "in_progress") == "in_progress"
    assert step("in_progress", "completed") == "completed"
    assert step("scheduled", "canceled") == "canceled"
    assert step("in_progress", "discontinued") == "discontinued"
    assert step("canceled", "canceled") == "canceled"
    for current, target in [
        ("completed", "canceled"),
        ("canceled", "scheduled"),
        ("in_progress", "scheduled"),
        ("discontinued", "in_progress"),
        ("scheduled", "lost"),
    ]:
        with pytest.raises(InvalidTransition):
            step(current, target)
