"""The collector is paused while the pyvmm program starts and resumed when the guest runs."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from pyvmm import startup_gc


@pytest.fixture(autouse=True)
def collector_as_it_was() -> Iterator[None]:
    was = gc.isenabled()
    yield
    startup_gc._paused = False
    gc.unfreeze()
    if was:
        gc.enable()


def test_pause_then_resume_freezes_what_start_up_made() -> None:
    gc.enable()
    gc.unfreeze()
    startup_gc.pause_collection()
    assert not gc.isenabled()
    made = [[] for _ in range(100)]  # what start-up makes
    startup_gc.resume_collection()
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(made)
    frozen = gc.get_freeze_count()
    startup_gc.resume_collection()  # idempotent: nothing more is frozen
    assert gc.get_freeze_count() == frozen


def test_resume_without_a_pause_changes_nothing() -> None:
    """The library's callers never pause: Machine.run's resume leaves their collector alone."""
    gc.unfreeze()
    gc.disable()  # the caller's own choice
    startup_gc.resume_collection()
    assert not gc.isenabled() and gc.get_freeze_count() == 0
    gc.enable()
    startup_gc.resume_collection()
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_collector_already_off_is_not_turned_on_by_the_resume() -> None:
    gc.disable()
    startup_gc.pause_collection()  # off already: not ours to turn back on
    startup_gc.resume_collection()
    assert not gc.isenabled()


@pytest.mark.parametrize("command", ["demo", "host"])
def test_commands_that_run_outside_machine_run_resume_at_once(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pyvmm demo` and `pyvmm host` work for long without Machine.run: the collector is on."""
    import argparse

    from pyvmm import cli

    seen = []
    if command == "host":
        import pyvmm.cli.host

        monkeypatch.setattr(
            pyvmm.cli.host, "run_host", lambda args: seen.append(gc.isenabled()) or 0
        )
    else:
        import pyvmm.demos

        monkeypatch.setattr(pyvmm.demos, "list_demos", lambda: seen.append(gc.isenabled()) or "")
    gc.enable()
    startup_gc.pause_collection()
    cli.COMMANDS[command](argparse.Namespace(name=None, json=False, refresh=False))
    assert seen == [True]
