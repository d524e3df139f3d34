"""The event loop a taskbus process runs on (bus.eventloop) and the worker's flags for it."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from bus.eventloop import loop_factory, run
from bus.worker.__main__ import EXIT_USAGE
from bus.worker.__main__ import main as worker_main


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_runs_on_uvloop_where_installed() -> None:
    """The default takes uvloop when it is importable (it is a dependency here)."""
    assert importlib.util.find_spec("uvloop") is not None, "uvloop is a dependency on Linux"
    assert run(_loop_module()).startswith("uvloop")
    assert run(_loop_module(), loop="uvloop").startswith("uvloop")


def test_asyncio_choice_runs_on_the_standard_loop() -> None:
    """'asyncio' keeps the standard library's loop."""
    assert run(_loop_module(), loop="asyncio").startswith("asyncio")


def test_unknown_choice_is_refused_and_the_coroutine_closed() -> None:
    """A bad choice raises before anything runs; the coroutine is closed, not leaked
    (the suite turns a 'never awaited' warning into an error)."""
    with pytest.raises(ValueError, match="unknown event loop 'trio'"):
        run(_loop_module(), loop="trio")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown event loop"):
        loop_factory("")  # type: ignore[arg-type]


def test_uvloop_asked_for_but_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Asking for uvloop where it cannot be imported names the fix."""
    monkeypatch.setitem(__import__("sys").modules, "uvloop", None)
    with pytest.raises(ValueError, match="uvloop is not installed"):
        loop_factory("uvloop")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert loop_factory("auto") is asyncio.new_event_loop


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prefetch", "-1"], "--prefetch must be 0..10000"),
        (["--prefetch", "10001"], "--prefetch must be 0..10000"),
    ],
)
def test_worker_refuses_a_bad_prefetch(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Out-of-range flags exit with the usage status and say which flag."""
    assert worker_main(["--app", "billing", *argv]) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_worker_refuses_an_unknown_loop(capsys: pytest.CaptureFixture[str]) -> None:
    """--loop takes only the known choices (argparse's error, status 2)."""
    with pytest.raises(SystemExit) as done:
        worker_main(["--app", "billing", "--loop", "trio"])
    assert done.value.code == 2
    assert "invalid choice: 'trio'" in capsys.readouterr().err
