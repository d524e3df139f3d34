"""The end of a demo run: the checks only the run knows, the verdict, the parting hints.

The checks read back from Redis are :func:`bus.demo.state.final_checks`; the
run (:mod:`bus.demo.run`) adds :func:`own_checks` (the late app caught up, no
worker crashed) and :func:`verdict` prints them all and turns them into the
exit status.
"""

from __future__ import annotations

from collections.abc import Mapping

from bus.config.settings import Settings
from bus.demo.options import EXIT_FAIL, EXIT_PASS, LATE_APP
from bus.demo.procs import Child
from bus.demo.screen import Screen
from bus.demo.state import Check

__all__ = ["goodbye", "own_checks", "verdict"]


def own_checks(
    crashed: list[Child],
    *,
    late_start_s: float,
    late_backlog: int | None,
    caught_up_s: float | None,
) -> list[Check]:
    """The checks only the run knows: the late app caught up, no worker crashed."""
    late = late_backlog
    return [
        Check(
            late is not None and late > 0 and caught_up_s is not None,
            f"{LATE_APP} started {late_start_s:g}s late"
            + (
                f" with a backlog of {late} tasks and caught up in {caught_up_s:.1f}s"
                if late is not None and caught_up_s is not None
                else " and did not catch up"
            ),
        ),
        Check(
            not crashed,
            "no worker crashed"
            + "".join(f"; {c.label} (pid {c.pid}) exited with {c.exit_code()}" for c in crashed),
        ),
    ]


def verdict(
    screen: Screen,
    checks: list[Check],
    failure: str | None,
    *,
    settings: Settings,
    poison_tasks: Mapping[str, list[str]],
) -> int:
    """Print the checks, the verdict and what to do next; return the exit status."""
    screen.note("checks:")
    for check in checks:
        screen.note(f"  [{'ok' if check.ok else 'FAIL'}] {check.text}")
    failed = sum(1 for c in checks if not c.ok)
    if failed or failure is not None:
        why = f"{failed} of {len(checks)} checks failed" if failed else "a step failed"
        screen.note(f"verdict: FAIL - {why}")
        code = EXIT_FAIL
    else:
        screen.note(f"verdict: PASS - all {len(checks)} checks held")
        code = EXIT_PASS
    goodbye(screen, settings, poison_tasks)
    return code


def goodbye(screen: Screen, settings: Settings, poison_tasks: Mapping[str, list[str]]) -> None:
    """Say how to inspect what the run left, and how to stop the embedded Redis."""
    env = f"BUS_PREFIX={settings.prefix}"
    hint = f"inspect what is left: {env} python -m bus status"
    if poison_tasks:
        app, ids = next(iter(poison_tasks.items()))
        hint += f"; {env} python -m bus task show {ids[0]} --app {app}"
    screen.note(hint)
    if settings.redis_url is None:
        data_dir = settings.data_dir
        env = "" if data_dir == Settings().data_dir else f"BUS_DATA_DIR={data_dir} "
        screen.note(
            f"the embedded Redis in {data_dir} keeps running (other taskbus processes "
            f"share it); stop it with: {env}python -m bus redis stop"
        )
