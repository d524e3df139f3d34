"""The event loop a taskbus process runs on: uvloop where it is installed.

uvloop (libuv, in C) runs the same asyncio programs with less CPU per I/O
event; a worker spends a large part of each task in the loop (socket reads and
writes, task switches), so it drains faster and wakes sooner on it
(docs/benchmarks.md). It is a dependency on the platforms it supports; where it
is missing (Windows, PyPy) the standard loop runs the same code.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

__all__ = ["LOOP_CHOICES", "LoopChoice", "loop_factory", "run"]

T = TypeVar("T")

LoopChoice = Literal["auto", "uvloop", "asyncio"]
#: ``auto``: uvloop if installed, else asyncio's own loop.
LOOP_CHOICES: tuple[LoopChoice, ...] = ("auto", "uvloop", "asyncio")


def loop_factory(choice: LoopChoice = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """Return the factory of the event loop ``choice`` names.

    Raises:
        ValueError: ``choice`` is unknown, or ``uvloop`` is not installed.
    """
    if choice not in LOOP_CHOICES:
        raise ValueError(f"unknown event loop {choice!r} (choose from {', '.join(LOOP_CHOICES)})")
    if choice == "asyncio" or (choice == "auto" and importlib.util.find_spec("uvloop") is None):
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError as exc:
        raise ValueError(
            "event loop 'uvloop' asked for, but uvloop is not installed "
            "(pip install uvloop, or choose 'asyncio')"
        ) from exc
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], *, loop: LoopChoice = "auto") -> T:
    """Run ``main`` to completion on a new event loop, like :func:`asyncio.run`."""
    try:
        factory = loop_factory(loop)
    except ValueError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
