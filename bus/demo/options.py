"""What a demo run is given and how it can end: its options, errors and exit statuses.

Also the roles of the example apps in the story (:mod:`bus.demo.run`): which
one starts late, which one fails on the poison order and the variable that
fixes it. Kept apart from the story so that its pieces (:mod:`bus.demo.stage`,
:mod:`bus.demo.verdict`) share these facts without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from bus.demo import DEFAULT_EVENTS, SHORT_EVENTS
from bus.errors import BusError

__all__ = [
    "EXIT_FAIL",
    "EXIT_INTERRUPTED",
    "EXIT_PASS",
    "FIX_APP",
    "FIX_ENV",
    "LATE_APP",
    "DemoBusy",
    "DemoFailed",
    "DemoOptions",
]

#: The app started late, to show it catching up.
LATE_APP = "analytics"
#: The app that fails on the poison order, and the variable that fixes it.
FIX_APP = "billing"
FIX_ENV = "BILLING_POISON_FIXED"

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_INTERRUPTED = 130


class DemoBusy(BusError):
    """Another demo is running against the same Redis (its workers are alive)."""


class DemoFailed(BusError):
    """A step of the demo did not happen in time, or a worker died."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """How long the demo runs and how much it publishes.

    Attributes:
        events: Events to publish, the poison order included.
        publish_s: Over how many seconds.
        late_start_s: When the late app starts, after publishing began.
        show_dead_s: How long the dead letter stays before the fix is deployed.
        step_timeout_s: The longest any one step may take.
        drain_timeout_s: The longest the final settling may take.
        lease_s: The workers' lease (small, so a dead worker's tasks return fast).
        refresh_s: Time between two refreshes of the summary.
        verbose: Worker logs go to the terminal instead of files.
    """

    events: int = DEFAULT_EVENTS
    publish_s: float = 10.0
    late_start_s: float = 4.0
    show_dead_s: float = 2.0
    step_timeout_s: float = 30.0
    drain_timeout_s: float = 30.0
    lease_s: float = 2.0
    refresh_s: float = 0.5
    verbose: bool = False

    @classmethod
    def full(cls, *, events: int | None = None, verbose: bool = False) -> DemoOptions:
        """The demo as shown to people: ~300 events over ~10 s."""
        return cls(events=events or DEFAULT_EVENTS, verbose=verbose)

    @classmethod
    def short(cls, *, events: int | None = None, verbose: bool = False) -> DemoOptions:
        """A few seconds and fewer events (for the tests)."""
        return cls(
            events=events or SHORT_EVENTS,
            publish_s=2.0,
            late_start_s=1.0,
            show_dead_s=0.3,
            verbose=verbose,
        )
