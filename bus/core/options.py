"""Per-task options: queue, attempts, back-off, timeout, delay and scope.

This module owns :class:`TaskOptions`, the one description of *how* a task runs,
shared by the app config (``apps/<app>/app.toml``: subscriptions, named tasks and
recurring tasks) and the task engine (per-task options at enqueue), and
:class:`Backoff`, the retry delay policy with its JSON form.

Back-off has two forms, as in ``app.toml``:

* exponential (a table): ``{ base_s = 1.0, max_s = 300.0, jitter = 0.2 }``.
  The delay after failed attempt ``n`` is ``min(max_s, base_s * 2**(n-1))``,
  spread by *proportional* jitter: multiplied by a uniform factor in
  ``[1 - jitter, 1 + jitter]``, then capped at ``max_s`` again. Proportional
  (not "full") jitter keeps the mean on the nominal schedule, so ``base_s`` and
  ``max_s`` mean what they say; ``jitter = 1.0`` spreads as widely as full jitter.
* an explicit schedule (a list of seconds): ``[1, 5, 30]``. The delay after
  failed attempt ``n`` is the ``n``-th entry; the last one repeats. No jitter:
  a listed schedule is followed exactly.

The JSON form stored in task records is :meth:`Backoff.to_doc`: a mapping for
the exponential form, a list for a schedule. :meth:`Backoff.from_doc` reads
that, ``None`` (the default policy), and a mapping of the dataclass fields (so
``dataclasses.asdict`` output round-trips).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from bus.core.names import validate_queue_name
from bus.errors import ConfigError

__all__ = ["MAX_PREFETCH", "SCOPES", "Backoff", "OptionError", "Scope", "TaskOptions"]

Scope = Literal["any", "all"]
SCOPES: tuple[Scope, ...] = ("any", "all")

#: The most claimed tasks a worker may hold ready beyond its running ones.
MAX_PREFETCH = 10_000

_DEFAULT_BASE_S = 1.0
_DEFAULT_MAX_S = 300.0
_DEFAULT_JITTER = 0.2


class OptionError(ConfigError, ValueError):
    """A task option or back-off value is out of range or of the wrong type.

    It is a :class:`ValueError` too, so code that validates arguments the
    usual way catches it.
    """


def _number(name: str, value: Any) -> float:
    """Return ``value`` as a finite float, or raise naming the option."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OptionError(f"{name!r} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise OptionError(f"{name!r} must be a finite number, got {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before retrying a failed attempt.

    Either exponential (``base_s``, ``max_s``, ``jitter``) or, when
    ``delays_s`` is given, that explicit schedule (the other fields then keep
    their defaults). See the module docstring for the exact rules.

    Attributes:
        base_s: Delay after the first failed attempt, in seconds (> 0).
        max_s: Cap on every delay, in seconds (>= ``base_s``).
        jitter: Proportional jitter, 0 to 1 (0.2 = +/-20%).
        delays_s: Explicit delays in seconds (each >= 0); the last one repeats.

    Raises:
        OptionError: A value is out of range, or ``delays_s`` is combined with
            non-default exponential settings.
    """

    base_s: float = _DEFAULT_BASE_S
    max_s: float = _DEFAULT_MAX_S
    jitter: float = _DEFAULT_JITTER
    delays_s: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        base_s = _number("base_s", self.base_s)
        max_s = _number("max_s", self.max_s)
        jitter = _number("jitter", self.jitter)
        if base_s <= 0:
            raise OptionError(f"'base_s' must be > 0, got {self.base_s!r}")
        if max_s < base_s:
            raise OptionError(f"'max_s' ({self.max_s!r}) must be >= 'base_s' ({self.base_s!r})")
        if not 0 <= jitter <= 1:
            raise OptionError(f"'jitter' must be between 0 and 1, got {self.jitter!r}")
        object.__setattr__(self, "base_s", base_s)
        object.__setattr__(self, "max_s", max_s)
        object.__setattr__(self, "jitter", jitter)
        if self.delays_s is None:
            return
        if (base_s, max_s, jitter) != (_DEFAULT_BASE_S, _DEFAULT_MAX_S, _DEFAULT_JITTER):
            raise OptionError(
                "a back-off is either a list of delays or a table of base_s/max_s/jitter, not both"
            )
        if isinstance(self.delays_s, str | bytes) or not isinstance(self.delays_s, Sequence):
            raise OptionError(f"'delays_s' must be a list of seconds, got {self.delays_s!r}")
        if not self.delays_s:
            raise OptionError("a back-off list needs at least one delay, e.g. [1, 5, 30]")
        delays = tuple(_number("delays_s", d) for d in self.delays_s)
        if any(d < 0 for d in delays):
            raise OptionError(f"back-off delays must be >= 0 seconds, got {list(self.delays_s)!r}")
        object.__setattr__(self, "delays_s", delays)

    @classmethod
    def from_doc(cls, doc: Backoff | Sequence[float] | Mapping[str, Any] | None) -> Backoff:
        """Build a back-off from its JSON or TOML form.

        Args:
            doc: ``None`` (the default policy), a list of delays in seconds, a
                mapping of :class:`Backoff` fields (``base_s``, ``max_s``,
                ``jitter``, ``delays_s``), or a :class:`Backoff`.

        Returns:
            The back-off policy.

        Raises:
            OptionError: Unknown keys, wrong types or out-of-range values.
        """
        if doc is None:
            return cls()
        if isinstance(doc, Backoff):
            return doc
        if isinstance(doc, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = sorted(str(k) for k in doc if k not in known)
            if unknown:
                raise OptionError(
                    f"unknown back-off key {unknown[0]!r} (use base_s, max_s, jitter, "
                    "or a list of delays)"
                )
            return cls(**doc)
        if isinstance(doc, Sequence) and not isinstance(doc, str | bytes):
            return cls(delays_s=tuple(doc))
        raise OptionError(
            f"a back-off is a table {{ base_s, max_s, jitter }} or a list of delays, got {doc!r}"
        )

    def to_doc(self) -> dict[str, float] | list[float]:
        """Return the JSON form: a list of delays, or the exponential settings."""
        if self.delays_s is not None:
            return list(self.delays_s)
        return {"base_s": self.base_s, "max_s": self.max_s, "jitter": self.jitter}

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Return the delay before the attempt that follows failed ``attempt``.

        Args:
            attempt: The number of the attempt that just failed, from 1.
            rng: Source of the jitter draw (tests pass a seeded one); the
                ``random`` module's shared generator when omitted.

        Returns:
            Seconds to wait, within ``[0, max_s]`` (or the schedule's entry).

        Raises:
            ValueError: ``attempt`` is below 1.
        """
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, got {attempt}")
        if self.delays_s is not None:
            return self.delays_s[min(attempt, len(self.delays_s)) - 1]
        draw = rng.random() if rng is not None else random.random()
        # 2**1023 is the largest finite power; past it the cap applies anyway.
        nominal = min(self.max_s, self.base_s * 2.0 ** min(attempt - 1, 1023))
        spread = 1.0 - self.jitter + 2.0 * self.jitter * draw
        return min(self.max_s, nominal * spread)


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """How a task runs; validated on construction.

    The app config builds one per subscription, named task and recurring task;
    the task engine takes the same object for per-task options.

    Attributes:
        queue: Queue the task goes to: 1-100 of ``A-Z a-z 0-9 _ . -``.
        max_attempts: Attempts before the task is dead (>= 1).
        backoff: Delay policy between attempts.
        timeout_s: Per-attempt time limit in seconds (> 0).
        delay_s: Delay before the first attempt in seconds (>= 0).
        scope: ``"any"`` (one worker runs it) or ``"all"`` (every running
            worker node runs it once).

    Raises:
        OptionError: A value is out of range or of the wrong type; the message
            names the option.
    """

    queue: str = "default"
    max_attempts: int = 5
    backoff: Backoff = field(default_factory=Backoff)
    timeout_s: float = 60.0
    delay_s: float = 0.0
    scope: Scope = "any"

    def __post_init__(self) -> None:
        if not isinstance(self.queue, str):
            raise OptionError(f"'queue' must be a string, got {self.queue!r}")
        try:
            validate_queue_name(self.queue)
        except ValueError as exc:
            raise OptionError(f"'queue': {exc}") from exc
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise OptionError(f"'max_attempts' must be an integer, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise OptionError(f"'max_attempts' must be >= 1, got {self.max_attempts}")
        if not isinstance(self.backoff, Backoff):
            raise OptionError(
                f"'backoff' must be a Backoff (see Backoff.from_doc), got {self.backoff!r}"
            )
        timeout_s = _number("timeout_s", self.timeout_s)
        if timeout_s <= 0:
            raise OptionError(f"'timeout_s' must be > 0, got {self.timeout_s!r}")
        delay_s = _number("delay_s", self.delay_s)
        if delay_s < 0:
            raise OptionError(f"'delay_s' must be >= 0, got {self.delay_s!r}")
        if self.scope not in SCOPES:
            raise OptionError(f"'scope' must be 'any' or 'all', got {self.scope!r}")
        object.__setattr__(self, "timeout_s", timeout_s)
        object.__setattr__(self, "delay_s", delay_s)
