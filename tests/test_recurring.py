"""Recurring tasks on a real Redis: chains, the boot check, changes, catch-up, crashes.

Chain maths run with injected times (``sync``/``after_settled`` take ``now_ms``);
a few tests run real workers on 200 ms schedules, and the crash tests run real
worker processes (``python -m bus.worker``) that are killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from redis.asyncio import Redis

from bus import App, Settings, TaskContext
from bus.core.schedule import Schedule, cron, every
from bus.recurring import Recurring, RecurringChains, occurrence_id, parse_occurrence_id
from bus.store import engine, features, transport
from bus.store.keys import AppKeys
from tests.conftest import raw, text
from tests.engine_helpers import eventually, running_worker
from tests.procs.runner import Proc, wait_until

KEYS = AppKeys("bus", "clock")
PERIOD = 200
T0 = 1_700_000_000_400  # a multiple of 200 and 600 ms


def make_app() -> App:
    """An app with two declared tasks that do nothing."""
    app = App("clock")

    @app.task(queue="reports")
    async def report(payload: Any) -> None:
        return None

    @app.task()
    async def cleanup(payload: Any) -> None:
        return None

    return app


def chains(aredis: Redis, *recurring: Recurring, app: App | None = None) -> RecurringChains:
    """Chains of the test app, with a 1 s grace."""
    return RecurringChains(app or make_app(), aredis, KEYS, recurring, grace_ms=1_000)


async def entries(aredis: Redis) -> dict[str, dict[str, Any]]:
    """The recurring hash, decoded."""
    raw = await aredis.hgetall(KEYS.recurring)
    return {text(k): orjson.loads(v) for k, v in raw.items()}


async def occurrences(aredis: Redis) -> dict[str, str]:
    """Every occurrence task of the app -> its state."""
    raw = await aredis.hgetall(KEYS.state)
    return {
        text(k): orjson.loads(v)["s"]
        for k, v in raw.items()
        if parse_occurrence_id(text(k)) is not None
    }


def slot_of(task_id: str) -> int:
    """The slot of an occurrence id; fails the test for any other id."""
    parsed = parse_occurrence_id(task_id)
    assert parsed is not None, f"{task_id!r} is not an occurrence id"
    return parsed[1]


async def pending(aredis: Redis) -> list[str]:
    """Occurrences that wait or run."""
    states = await occurrences(aredis)
    return sorted(i for i, s in states.items() if s in ("scheduled", "queued", "running"))


async def run_occurrence(aredis: Redis, task_id: str, queue: str, now_ms: int) -> None:
    """Claim and settle one occurrence as succeeded, without moving the chain."""
    claimed = await engine.claim(
        aredis, KEYS, [queue], now_ms=now_ms, lease_ms=5_000, max_tasks=10, worker_id="t"
    )
    (task,) = [t for t in claimed.tasks if t.id == task_id]
    await engine.settle(
        aredis,
        KEYS,
        [engine.Outcome(task.id, task.token, queue, "ok")],
        now_ms=now_ms,
        retention_ms=86_400_000,
    )


# -- the boot check ------------------------------------------------------------


async def test_boot_check_adds_one_occurrence_at_the_next_slot(aredis: Redis) -> None:
    """A new recurring task gets one waiting occurrence at the first slot after now."""
    changed = await chains(aredis, Recurring("report", every(PERIOD))).sync(T0 + 50, full=True)
    assert changed == {"added": ["report"]}
    first = occurrence_id("report", T0 + PERIOD)
    assert await occurrences(aredis) == {first: "scheduled"}
    entry = (await entries(aredis))["report"]
    assert (entry["slot"], entry["id"], entry["q"]) == (T0 + PERIOD, first, "reports")
    assert await aredis.zscore(KEYS.queue("reports").delayed, first) == T0 + PERIOD


async def test_boot_check_twice_changes_nothing(aredis: Redis) -> None:
    """A second worker start with the same config finds the chain in order."""
    await chains(aredis, Recurring("report", every(PERIOD))).sync(T0, full=True)
    again = await chains(aredis, Recurring("report", every(PERIOD))).sync(T0 + 30, full=True)
    assert again == {}
    assert await pending(aredis) == [occurrence_id("report", T0 + PERIOD)]


async def test_many_workers_booting_at_once_leave_exactly_one_occurrence(
    aredis: Redis, redis_url: str
) -> None:
    """Twenty boot checks race, their clocks straddling slots: one occurrence results."""
    item = Recurring("report", every(PERIOD))
    clients = [Redis.from_url(redis_url) for _ in range(20)]
    try:
        await asyncio.gather(
            *(chains(c, item).sync(T0 + 190 + 7 * i, full=True) for i, c in enumerate(clients))
        )
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    (only,) = await pending(aredis)
    assert (await entries(aredis))["report"]["id"] == only
    assert len(await occurrences(aredis)) == 1


async def test_a_move_from_an_occurrence_that_is_no_longer_current_changes_nothing(
    aredis: Redis,
) -> None:
    """recur.lua is compare-and-set: a caller that read an old entry gets the current one."""
    chain = chains(aredis, Recurring("report", every(PERIOD)))
    await chain.sync(T0 - 10, full=True)
    await chain.after_settled(
        [engine.Outcome(occurrence_id("report", T0), "", "reports", "ok")], T0
    )
    before = await aredis.hgetall(KEYS.state)
    current = await aredis.hget(KEYS.recurring, "report")
    stale = features.recur_call(
        KEYS,
        now_ms=T0,
        name="report",
        seen_id=occurrence_id("report", T0),
        seen_fp="",
        seen_queue="reports",
        entry=b'{"slot": 1, "id": "rec.report.1", "fp": "x", "q": "reports"}',
        task=engine.NewTask("rec.report.1", b"{}", 1, 1),
        queue="reports",
    )
    assert await transport.run_calls(aredis, [stale]) == [[0, current]]
    assert await aredis.hgetall(KEYS.state) == before
    assert await aredis.hget(KEYS.recurring, "report") == current


async def test_undeclared_recurring_task_is_refused(aredis: Redis) -> None:
    """A recurring task needs a declared handler; the error names it."""
    with pytest.raises(ValueError, match="'nightly' has no declared task"):
        chains(aredis, Recurring("nightly", every("1d")))


# -- after an occurrence ---------------------------------------------------------


async def test_next_occurrence_follows_the_finished_slot_not_now(aredis: Redis) -> None:
    """Finished 150 ms late, the next occurrence is still one period after its slot."""
    item = Recurring("report", every(PERIOD))
    chain = chains(aredis, item)
    await chain.sync(T0 - 10, full=True)
    first = occurrence_id("report", T0)
    await run_occurrence(aredis, first, "reports", T0 + 150)
    moved = await chain.after_settled([engine.Outcome(first, "", "reports", "ok")], T0 + 150)
    assert moved == 1
    assert await pending(aredis) == [occurrence_id("report", T0 + PERIOD)]


async def test_a_dead_occurrence_also_moves_the_chain(aredis: Redis) -> None:
    """The final failure of an occurrence schedules the next one like a success."""
    chain = chains(aredis, Recurring("report", every(PERIOD)))
    await chain.sync(T0 - 10, full=True)
    first = occurrence_id("report", T0)
    await chain.after_settled([engine.Outcome(first, "", "reports", "dead")], T0 + 5)
    assert (await entries(aredis))["report"]["slot"] == T0 + PERIOD


async def test_retry_outcomes_and_other_tasks_do_not_move_the_chain(aredis: Redis) -> None:
    """Only final outcomes of the current occurrence move a chain."""
    chain = chains(aredis, Recurring("report", every(PERIOD)))
    await chain.sync(T0 - 10, full=True)
    first = occurrence_id("report", T0)
    outcomes = [
        engine.Outcome(first, "", "reports", "retry"),
        engine.Outcome("rec.report.123", "", "reports", "ok"),
        engine.Outcome(f"{first}@node-1", "", "node.node-1", "ok"),
        engine.Outcome("order-7", "", "default", "ok"),
    ]
    assert await chain.after_settled(outcomes, T0 + 5) == 0
    assert (await entries(aredis))["report"]["id"] == first


async def test_long_run_skips_the_slots_it_overran(aredis: Redis) -> None:
    """A run that outlasts five periods goes on at the next future slot (catch_up 1)."""
    chain = chains(aredis, Recurring("report", every(PERIOD)))
    await chain.sync(T0 - 10, full=True)
    first = occurrence_id("report", T0)
    await chain.after_settled([engine.Outcome(first, "", "reports", "ok")], T0 + 1_050)
    assert (await entries(aredis))["report"]["slot"] == T0 + 1_200


# -- changes -----------------------------------------------------------------------


async def test_changed_schedule_replaces_the_waiting_occurrence(aredis: Redis) -> None:
    """A new period at the next boot: the old occurrence is deleted, the new slot used."""
    await chains(aredis, Recurring("report", every(PERIOD))).sync(T0 + 10, full=True)
    old = occurrence_id("report", T0 + PERIOD)
    changed = await chains(aredis, Recurring("report", every(3 * PERIOD))).sync(T0 + 20, full=True)
    assert changed == {"rescheduled": ["report"]}
    new = occurrence_id("report", T0 + 3 * PERIOD)
    assert await occurrences(aredis) == {new: "scheduled"}
    assert await aredis.zscore(KEYS.queue("reports").delayed, old) is None
    assert await aredis.hget(KEYS.tasks, old) is None


async def test_changed_options_reschedule_too(aredis: Redis) -> None:
    """Moving the task to another queue replaces the occurrence on the old queue."""
    await chains(aredis, Recurring("report", every(PERIOD))).sync(T0 + 10, full=True)
    app = App("clock")

    @app.task(queue="slow")
    async def report(payload: Any) -> None:
        return None

    await chains(aredis, Recurring("report", every(PERIOD)), app=app).sync(T0 + 20, full=True)
    assert await aredis.zcard(KEYS.queue("reports").delayed) == 0
    assert await aredis.zcard(KEYS.queue("slow").delayed) == 1


async def test_removed_recurring_task_loses_its_waiting_occurrence(aredis: Redis) -> None:
    """A boot check without the task deletes its occurrence and its entry."""
    await chains(aredis, Recurring("report", every(PERIOD))).sync(T0, full=True)
    changed = await chains(aredis).sync(T0 + 20, full=True)
    assert changed == {"removed": ["report"]}
    assert await entries(aredis) == {}
    assert await occurrences(aredis) == {}
    assert await aredis.zcard(KEYS.queue("reports").delayed) == 0


async def test_running_occurrence_finishes_after_a_change_without_moving_the_chain(
    aredis: Redis,
) -> None:
    """A change leaves a running occurrence alone; its outcome then moves nothing."""
    await chains(aredis, Recurring("report", every(PERIOD))).sync(T0 - 10, full=True)
    running = occurrence_id("report", T0)
    claimed = await engine.claim(
        aredis, KEYS, ["reports"], now_ms=T0, lease_ms=5_000, max_tasks=1, worker_id="t"
    )
    assert [t.id for t in claimed.tasks] == [running]
    changed_chain = chains(aredis, Recurring("report", cron("0 3 * * *")))
    await changed_chain.sync(T0 + 10, full=True)
    assert (await occurrences(aredis))[running] == "running"
    next_id = (await entries(aredis))["report"]["id"]
    outcome = engine.Outcome(running, claimed.tasks[0].token, "reports", "ok")
    await engine.settle(aredis, KEYS, [outcome], now_ms=T0 + 20, retention_ms=60_000)
    assert await changed_chain.after_settled([outcome], T0 + 20) == 0
    assert (await entries(aredis))["report"]["id"] == next_id


async def test_worker_of_an_older_config_does_not_undo_a_change(aredis: Redis) -> None:
    """Repair (with every heartbeat) leaves chains of another schedule alone."""
    await chains(aredis, Recurring("report", every(PERIOD))).sync(T0 + 10, full=True)
    await chains(aredis, Recurring("report", every(3 * PERIOD))).sync(T0 + 20, full=True)
    changed = await chains(aredis, Recurring("report", every(PERIOD))).sync(T0 + 30, full=False)
    assert changed == {}
    assert (await entries(aredis))["report"]["slot"] == T0 + 3 * PERIOD


# -- repair and catch-up -------------------------------------------------------------


async def test_boot_check_repairs_a_chain_broken_between_settle_and_next(aredis: Redis) -> None:
    """Settled by a worker that died before the next one: the latest missed slot runs."""
    await chains(aredis, Recurring("report", every(PERIOD))).sync(T0 - 10, full=True)
    await run_occurrence(aredis, occurrence_id("report", T0), "reports", T0 + 5)
    changed = await chains(aredis, Recurring("report", every(PERIOD))).sync(T0 + 1_100, full=True)
    assert changed == {"repaired": ["report"]}
    assert await occurrences(aredis) == {
        occurrence_id("report", T0): "succeeded",
        occurrence_id("report", T0 + 1_000): "queued",
    }


async def test_repair_waits_for_the_settling_worker(aredis: Redis) -> None:
    """An occurrence that finished within the grace is left to the worker that settled it."""
    await chains(aredis, Recurring("report", every(PERIOD))).sync(T0 - 10, full=True)
    await run_occurrence(aredis, occurrence_id("report", T0), "reports", T0 + 5)
    assert await chains(aredis, Recurring("report", every(PERIOD))).sync(T0 + 50, full=False) == {}


@pytest.mark.parametrize(
    ("catch_up", "slot"),
    [(0, T0 + 10_200), (1, T0 + 10_000), (3, T0 + 9_600)],
)
async def test_return_after_an_outage_runs_catch_up_missed_slots(
    aredis: Redis, catch_up: int, slot: int
) -> None:
    """Ten seconds offline: the late occurrence moves to the last catch_up slots (0: none)."""
    item = Recurring("report", every(PERIOD), catch_up=catch_up)
    await chains(aredis, item).sync(T0 - 10, full=True)
    await chains(aredis, item).sync(T0 + 10_000, full=True)
    assert await pending(aredis) == [occurrence_id("report", slot)]


async def test_catch_up_runs_stop_at_the_present(aredis: Redis) -> None:
    """With catch_up 3, the late run is followed by the two latest missed slots, then the future."""
    item = Recurring("report", every(PERIOD), catch_up=3)
    chain = chains(aredis, item)
    await chain.sync(T0 - 10, full=True)
    now = T0 + 10_000
    await chain.sync(now, full=True)
    slots = []
    for _ in range(4):
        (current,) = await pending(aredis)
        slots.append(slot_of(current))
        await chain.after_settled([engine.Outcome(current, "", "reports", "ok")], now)
    assert slots == [now - 400, now - 200, now, now + 200]


# -- real workers ----------------------------------------------------------------------


async def test_worker_runs_occurrences_at_their_slots(aredis: Redis) -> None:
    """A worker with a 200 ms schedule runs consecutive slots, each at or after its slot."""
    app = App("clock")
    runs: list[tuple[int, int]] = []

    @app.task()
    async def tick(payload: dict[str, int], ctx: TaskContext) -> None:
        from bus.core import clock

        runs.append((payload["slot_ms"], clock.now_ms()))

    item = Recurring("tick", Schedule(every_ms=PERIOD))
    async with running_worker(app, aredis, recurring=[item], lease_s=1.0):
        await eventually(lambda: _at_least(runs, 3), 5, "three occurrences")
    slots = [slot for slot, _ in runs[:3]]
    assert slots == [slots[0], slots[0] + PERIOD, slots[0] + 2 * PERIOD]
    assert all(ran >= slot for slot, ran in runs)
    assert len(await pending(aredis)) == 1


async def _at_least(items: list[Any], count: int) -> bool:
    return len(items) >= count


# -- worker processes --------------------------------------------------------------------

# Copied into each temporary app dir as handlers.py; app.toml names handlers:tick.
HANDLERS = Path(__file__).parent / "handlers" / "evidence.py"


def write_app(root: Path, schedule: str) -> Path:
    """Write the app 'clock' with one recurring task, 'tick'."""
    directory = root / "clock"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "handlers.py").write_bytes(HANDLERS.read_bytes())
    (directory / "app.toml").write_text(
        f'name = "clock"\n\n[[recurring]]\nname = "tick"\nhandler = "handlers:tick"\n{schedule}\n'
    )
    return root


@pytest.fixture
def env(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Environment for worker processes: the private server and a temp apps dir."""
    apps = tmp_path / "apps"
    for key, value in {
        "BUS_REDIS_URL": str(settings.redis_url),
        "BUS_SCHEMAS_DIR": str(settings.schemas_dir),
        "BUS_APPS_DIR": str(apps),
        "BUS_DATA_DIR": str(tmp_path / "data"),
    }.items():
        monkeypatch.setenv(key, value)
    return apps


def start_worker(procs: Callable[..., Proc], *extra: str) -> Proc:
    """Start ``python -m bus.worker --app clock``."""
    return procs("-m", "bus.worker", "--app", "clock", "--log-level", "info", *extra, name="worker")


def started(proc: Proc) -> bool:
    """True once the worker logged its start; fails if it exited."""
    assert proc.popen.poll() is None, proc.output()
    return "worker_started" in proc.output()


def ticks(client: redis.Redis) -> list[tuple[str, int, int]]:
    """(task id, attempt, pid) of every run of 'tick', in order."""
    out = []
    for run in client.lrange("test:ticks", 0, -1):
        task_id, attempt, pid = text(run).split("|")
        out.append((task_id, int(attempt), int(pid)))
    return out


def test_five_worker_processes_starting_at_once_leave_one_occurrence(
    procs: Callable[..., Proc], env: Path, redis_url: str
) -> None:
    """Five workers boot at the same moment; exactly one occurrence waits."""
    write_app(env, 'every = "1h"')
    workers = [start_worker(procs) for _ in range(5)]
    client = redis.Redis.from_url(redis_url)
    wait_until(lambda: all(started(w) for w in workers), 30, "five workers to start")
    wait_until(lambda: client.zcard("bus:app:{clock}:nodes") == 5, 10, "five nodes")
    states = {
        text(k): orjson.loads(v)["s"] for k, v in client.hgetall("bus:app:{clock}:state").items()
    }
    assert list(states.values()) == ["scheduled"]
    (occurrence,) = states
    assert orjson.loads(raw(client.hget("bus:app:{clock}:recurring", "tick")))["id"] == occurrence
    assert slot_of(occurrence) % 3_600_000 == 0
    client.close()


def test_worker_killed_during_a_recurring_run_retries_it_and_the_chain_continues(
    procs: Callable[..., Proc], env: Path, redis_url: str
) -> None:
    """SIGKILL mid-run: the occurrence is retried after its lease, then later slots run."""
    write_app(env, 'every = "200ms"')
    client = redis.Redis.from_url(redis_url)
    client.set("test:hold-next", "1")
    victim = start_worker(procs, "--lease-s", "0.5")
    wait_until(lambda: len(ticks(client)) == 1, 20, "the first occurrence to start")
    (held_id, _, pid) = ticks(client)[0]
    assert pid == victim.pid
    victim.signal(signal.SIGKILL)
    start_worker(procs, "--lease-s", "0.5")
    wait_until(lambda: len({t[0] for t in ticks(client)}) >= 4, 20, "three more occurrences")
    runs = ticks(client)
    retried = [(a, p) for i, a, p in runs if i == held_id]
    assert [a for a, _ in retried] == [1, 2]
    assert retried[1][1] != victim.pid
    state = orjson.loads(raw(client.hget("bus:app:{clock}:state", held_id)))
    assert state["s"] == "succeeded"
    later = [slot_of(i) for i, _, _ in runs if i != held_id]
    held_slot = slot_of(held_id)
    assert later == sorted(set(later))
    assert all(slot > held_slot and slot % PERIOD == 0 for slot in later)
    client.close()
