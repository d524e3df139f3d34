"""What a publish gives back besides the event keys: the report a caller shows a
person (:class:`PublishReport`), and the one failure after which tasks exist
for events that were not recorded (:class:`EventNotRecorded`).

The publish flow that builds them is in ``bus.events.publish``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bus.errors import BusError

__all__ = ["EventNotRecorded", "PublishReport"]


@dataclass(frozen=True, slots=True)
class PublishReport:
    """What one publish did, for callers that tell a person (the CLI).

    Attributes:
        key: The event key (for a duplicate, the first event's).
        duplicate: True if ``source`` + ``id`` was published before within the
            dedup window: nothing new was recorded or routed.
        apps: The apps the event was routed to now, sorted: empty for an event
            no subscription matches, and for a duplicate, unless the first
            event was still pending (then it was routed again, idempotently).
        held_for: Apps whose registry entry is damaged: the event stays
            pending until they are repaired, since they may subscribe.
    """

    key: str
    duplicate: bool
    apps: tuple[str, ...]
    held_for: tuple[str, ...] = ()


class EventNotRecorded(BusError):
    """Recording the events failed, after their tasks were sent in the same round trip.

    Raised only for a publish without an ``id``: then the record shares one
    round trip with the enqueues, and one server runs a pipeline's calls one
    after the other without stopping at an error, so the subscribers'
    enqueues ran although the record did not. The apps named got their tasks
    (whole: a task is complete on its own) and will run them; the events are
    in neither the event log nor ``pending``. A retry records the event anew
    under a new key, so those apps would get a second task. With an ``id``
    the record goes first, alone, and a failed record raises
    :class:`bus.errors.RedisCommandError` with nothing else sent.

    Attributes:
        event_keys: The keys the events would have had.
        apps: The apps that got a task for at least one of them.
    """

    def __init__(self, event_keys: Sequence[str], apps: Sequence[str]) -> None:
        self.event_keys = list(event_keys)
        self.apps = sorted(apps)
        given = (
            f"tasks were created for app(s) {', '.join(self.apps)} and will run"
            if self.apps
            else "no task was created"
        )
        super().__init__(
            f"event {self.event_keys[0]}{' and others' if len(self.event_keys) > 1 else ''} "
            f"could not be recorded (see the cause); {given}. A retry records it anew under "
            "a new key, so the apps that got a task would get a second one; publish with an "
            "id to make retries safe."
        )
