"""Corrupt, truncated and mistyped task data planted in Redis.

A record no worker can run ends dead with a reason that says so, visible in
``python -m bus dead list``; the worker goes on with the next tasks. The tests
marked ``xfail(strict=True)`` pin down damage that the engine's scripts or the
router do not handle yet (see each reason); they fail loudly once fixed, so the
marker goes with the fix.
"""

from __future__ import annotations

import asyncio
from typing import Any, TextIO, cast

import orjson
import pytest
import structlog
from redis.asyncio import Redis

from bus import App, TaskContext, TaskState
from bus.cli import main
from bus.client import Bus
from bus.config.apps import event_adapter
from bus.config.settings import Settings
from bus.core import clock
from bus.core.task import TaskRecord
from bus.core.verdict import reason_doc
from bus.events.sweep import sweep_pending
from bus.inspect.deadletters import get_dead, list_dead, replay
from bus.logs import CurrentStderr
from bus.store import engine, features
from bus.store.keys import AppKeys, BusKeys
from tests.conftest import Logs
from tests.engine_helpers import running_worker, task_in_state
from tests.test_cli_ops import cli_env

__all__ = ["cli_env"]  # the fixture, imported for the CLI tests below

APP = "shop"
KEYS = AppKeys("bus", APP)
QUEUE = KEYS.queue("default")


def shop(done: list[Any]) -> App:
    """An app whose ``job`` records its payload, and whose ``on-event`` records the event."""
    app = App(APP)

    @app.task(max_attempts=3)
    async def job(payload: Any) -> None:
        done.append(payload)

    @app.task(name="on-event", max_attempts=3)
    async def on_event(event: Any, ctx: TaskContext) -> None:
        done.append(event)

    return app


async def stored_record(aredis: Redis, task_id: str) -> dict[str, Any]:
    """The task's record as stored, decoded."""
    raw = await aredis.hget(KEYS.tasks, task_id)
    assert raw is not None
    doc: dict[str, Any] = orjson.loads(raw)
    return doc


def without(field: str) -> Any:
    return lambda doc: {k: v for k, v in doc.items() if k != field}


def setting(field: str, value: Any) -> Any:
    return lambda doc: {**doc, field: value}


# What a planted record is, and what the dead letter's message must say.
RAW: dict[str, tuple[bytes, str]] = {
    "garbage bytes": (b"\x00\xff\xfe\x81 not a record \x9c", "undecodable task record"),
    "empty": (b"", "undecodable task record"),
    "truncated JSON": (b'{"id": "t1", "app": "sh', "undecodable task record"),
    # A msgpack map of 7 entries, cut after the second key.
    "truncated msgpack": (bytes.fromhex("87a26964a2743161a3617070"), "undecodable task record"),
    "JSON array": (b"[1, 2, 3]", "undecodable task record"),
    "JSON number": (b"42", "undecodable task record"),
    "JSON string": (b'"job"', "undecodable task record"),
    "JSON null": (b"null", "undecodable task record"),
}
MUTATED: dict[str, tuple[Any, str]] = {
    "no name": (without("name"), "'name'"),
    "no payload": (without("payload"), "'payload'"),
    "no max": (without("max"), "'max'"),
    "no timeout": (without("timeout_s"), "'timeout_s'"),
    "name is a list": (setting("name", ["job"]), "field 'name' is list ['job']"),
    "name is a number": (setting("name", 7), "field 'name' is int 7"),
    "queue is null": (setting("queue", None), "field 'queue' is NoneType None"),
    "max is a word": (setting("max", "many"), "invalid literal for int()"),
    "max is zero": (setting("max", 0), "field 'max' is 0"),
    "timeout is NaN": (setting("timeout_s", "nan"), "field 'timeout_s' is nan"),
    "timeout is negative": (setting("timeout_s", -1), "field 'timeout_s' is -1.0"),
    "kind is unknown": (setting("kind", "weird"), "field 'kind' is str 'weird'"),
    "scope is a number": (setting("scope", 7), "field 'scope' is int 7"),
}


@pytest.mark.parametrize("case", [*RAW, *MUTATED])
async def test_corrupt_record_is_dead_lettered_with_why_and_the_next_task_runs(
    bus: Bus, aredis: Redis, case: str
) -> None:
    """Each kind of damage ends dead as 'undecodable record'; the worker goes on."""
    if case in RAW:
        planted, expected = RAW[case]
    else:
        mutate, expected = MUTATED[case]
    done: list[Any] = []
    app = shop(done)
    bad = await bus.enqueue(app, "job", "bad")
    if case in MUTATED:
        planted = orjson.dumps(mutate(await stored_record(aredis, bad.id)))
    await aredis.hset(KEYS.tasks, bad.id, planted)
    async with running_worker(app, aredis, concurrency=1):
        dead = await task_in_state(bus, APP, bad.id, TaskState.DEAD)
        good = await bus.enqueue(app, "job", "good")
        await task_in_state(bus, APP, good.id, TaskState.SUCCEEDED)
    assert done == ["good"]
    assert dead.dead_reason == "undecodable record"
    assert dead.attempts == 1
    [error] = dead.errors
    assert error.type == "UndecodableRecord"
    assert expected in error.message
    letter = await get_dead(aredis, "bus", APP, bad.id)
    assert letter is not None
    assert letter.reason == "undecodable record"


async def test_dead_list_shows_corrupt_and_mistyped_records_and_replay_skips_them(
    bus: Bus,
    aredis: Redis,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """`dead list` (text and JSON) lists every undecodable record; replay says why it cannot."""
    done: list[Any] = []
    app = shop(done)
    garbage = await bus.enqueue(app, "job", 1)
    await aredis.hset(KEYS.tasks, garbage.id, b"\x00garbage")
    mistyped = await bus.enqueue(app, "job", 2)
    doc = await stored_record(aredis, mistyped.id)
    await aredis.hset(KEYS.tasks, mistyped.id, orjson.dumps({**doc, "name": ["job"], "queue": 5}))
    async with running_worker(app, aredis):
        await task_in_state(bus, APP, garbage.id, TaskState.DEAD)
        await task_in_state(bus, APP, mistyped.id, TaskState.DEAD)

    monkeypatch.setenv("BUS_REDIS_URL", str(settings.redis_url))
    monkeypatch.setenv("BUS_DATA_DIR", str(settings.data_dir))
    # main() would configure structlog for the whole process, bound to this
    # test's captured stderr.
    monkeypatch.setattr("bus.cli.configure_logging", lambda *args, **kwargs: None)
    # Logs to standard error, as main() sends them: standard output is the JSON.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(cast(TextIO, CurrentStderr())))
    request.addfinalizer(structlog.reset_defaults)
    capsys.readouterr()  # the worker's log lines
    assert await asyncio.to_thread(main, ["dead", "list", "--app", APP]) == 0
    text = capsys.readouterr().out
    for task_id in (garbage.id, mistyped.id):
        row = next(line for line in text.splitlines() if task_id in line)
        assert "undecodable record" in row
    assert await asyncio.to_thread(main, ["dead", "list", "--app", APP, "--json"]) == 0
    listed = {t["id"]: t for t in orjson.loads(capsys.readouterr().out)["tasks"]}
    assert listed.keys() == {garbage.id, mistyped.id}
    assert all(t["dead_reason"] == "undecodable record" for t in listed.values())
    assert "undecodable task record" in listed[garbage.id]["record_error"]
    assert "field 'name' is list" in listed[mistyped.id]["last_error"]["message"]
    # The listing checks fields as the worker does, so it flags the mistyped record too.
    assert "field 'name' is list" in listed[mistyped.id]["record_error"]

    assert [t.id for t in await list_dead(aredis, "bus", APP, type="job")] == []
    report = await replay(aredis, "bus", APP, everything=True)
    assert report.replayed == []
    assert "undecodable task record" in report.skipped[garbage.id]
    assert "field 'name' is list" in report.skipped[mistyped.id]


async def test_event_task_whose_payload_is_no_envelope_is_dead_lettered(
    aredis: Redis, bus: Bus
) -> None:
    """A routed task whose payload is not an object dies as 'undecodable event', never runs."""
    done: list[Any] = []
    task_id = "EVT1.on-event"
    record = TaskRecord(
        id=task_id, app=APP, name="on-event", queue="default", payload="garbage", kind="event"
    )
    new = engine.NewTask(task_id, record.encode(), 3, 0)
    await engine.enqueue(aredis, KEYS, "default", clock.now_ms(), [new])
    async with running_worker(shop(done), aredis, payload_adapter=event_adapter()):
        dead = await task_in_state(bus, APP, task_id, TaskState.DEAD)
    assert done == []
    assert dead.dead_reason == "undecodable event"
    assert "not an event envelope" in dead.errors[0].message


# -- damage the worker cannot see: ids without a usable record or state ---------------


@pytest.mark.parametrize(
    "damage", ["record missing", "state missing", "state corrupt", "state lacks fields"]
)
async def test_worker_keeps_claiming_past_a_queued_id_without_a_usable_record_or_state(
    bus: Bus, aredis: Redis, damage: str
) -> None:
    """An id in the ready list whose data is gone or broken never stops the next tasks."""
    done: list[Any] = []
    app = shop(done)
    bad = await bus.enqueue(app, "job", "bad")
    await _damage(aredis, bad.id, damage)
    good = await bus.enqueue(app, "job", "good")
    async with running_worker(app, aredis, concurrency=1):
        await task_in_state(bus, APP, good.id, TaskState.SUCCEEDED)
    assert done == ["good"]
    assert await aredis.lrange(QUEUE.ready, 0, -1) == []
    assert await aredis.zrange(QUEUE.inflight, 0, -1) == []


async def _damage(aredis: Redis, task_id: str, damage: str) -> None:
    if damage == "record missing":
        await aredis.hdel(KEYS.tasks, task_id)
    elif damage == "state missing":
        await aredis.hdel(KEYS.state, task_id)
    elif damage == "state corrupt":
        await aredis.hset(KEYS.state, task_id, b"{garbage")
    else:
        await aredis.hset(KEYS.state, task_id, b'{"s":"queued"}')


async def test_queued_id_whose_record_is_missing_is_dead_lettered(bus: Bus, aredis: Redis) -> None:
    """A ready-list id with a state but no record ends dead with a reason, not silently queued."""
    ref = await bus.enqueue(APP, "job", 1)
    await aredis.hdel(KEYS.tasks, ref.id)
    await engine.claim(
        aredis, KEYS, ["default"], now_ms=clock.now_ms(), lease_ms=1000, max_tasks=1, worker_id="w"
    )
    assert await aredis.zscore(KEYS.dead, ref.id) is not None
    info = await bus.get_task(APP, ref.id)
    assert info is not None
    assert info.state is TaskState.DEAD


async def test_claim_dead_letters_a_task_whose_state_is_corrupt(bus: Bus, aredis: Redis) -> None:
    """A corrupt state entry costs that task only: the claim call succeeds for the others."""
    first = await bus.enqueue(APP, "job", 1)
    bad = await bus.enqueue(APP, "job", 2)
    await aredis.hset(KEYS.state, bad.id, b"{garbage")
    result = await engine.claim(
        aredis, KEYS, ["default"], now_ms=clock.now_ms(), lease_ms=1000, max_tasks=2, worker_id="w"
    )
    assert [t.id for t in result.tasks] == [first.id]
    assert await aredis.zscore(KEYS.dead, bad.id) is not None


async def test_settle_records_a_failure_when_the_error_list_is_corrupt(
    bus: Bus, aredis: Redis
) -> None:
    """A corrupt error list does not block the outcome of that task or of the rest of the batch."""
    bad = await bus.enqueue(APP, "job", 1)
    good = await bus.enqueue(APP, "job", 2)
    await aredis.hset(KEYS.errors, bad.id, b"{garbage")
    now = clock.now_ms()
    claimed = await engine.claim(
        aredis, KEYS, ["default"], now_ms=now, lease_ms=1000, max_tasks=2, worker_id="w"
    )
    tokens = {t.id: t.token for t in claimed.tasks}
    error = reason_doc("ValueError", "boom", attempt=1, at_ms=now, worker="w")
    outcomes = [
        engine.Outcome(bad.id, tokens[bad.id], "default", "dead", b"attempts exhausted|" + error),
        engine.Outcome(good.id, tokens[good.id], "default", "ok"),
    ]
    assert await engine.settle(aredis, KEYS, outcomes, now_ms=now, retention_ms=60_000) == []
    assert await aredis.zscore(KEYS.dead, bad.id) is not None
    info = await bus.get_task(APP, good.id)
    assert info is not None
    assert info.state is TaskState.SUCCEEDED


# -- a corrupt event waiting to be routed -----------------------------------------------


async def test_sweep_routes_pending_events_past_a_corrupt_envelope(aredis: Redis) -> None:
    """A corrupt envelope in the event log does not keep the sweep from the good events."""
    keys = BusKeys("bus")
    old = clock.now_ms() - 60_000
    good = {"id": "e1", "buskey": "GOOD", "type": "order.placed", "source": "t", "time": "x"}
    await aredis.hset(
        keys.events, mapping={"BAD": b'{"type": "order.pl', "GOOD": orjson.dumps(good)}
    )
    await aredis.zadd(keys.pending, {"BAD": old, "GOOD": old + 1})
    await sweep_pending(aredis, "bus", now_ms=clock.now_ms(), grace_ms=5_000)
    assert await aredis.zrange(keys.pending, 0, -1) == []


# -- damage costs the damaged entry only: listings, shows and claims go on -------------


def cli(*argv: str) -> int:
    """Run the CLI in a thread (it runs its own event loop)."""
    return main(list(argv))


async def test_dead_list_show_and_task_show_survive_a_non_utf8_state_buried_by_claim(
    bus: Bus, aredis: Redis, cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A state of non-UTF-8 bytes, dead-lettered by the claim, never stops the listing."""
    bad = await bus.enqueue(APP, "job", 1)
    other = await bus.enqueue(APP, "job", 2)
    await aredis.hset(KEYS.state, bad.id, b"\xff\xfe{\xc3 not json")
    await aredis.hset(KEYS.state, other.id, b"{garbage")
    await engine.claim(
        aredis, KEYS, ["default"], now_ms=clock.now_ms(), lease_ms=1000, max_tasks=5, worker_id="w"
    )
    assert await asyncio.to_thread(cli, "dead", "list", "--app", APP) == 0
    text = capsys.readouterr().out
    assert bad.id in text
    assert other.id in text
    assert await asyncio.to_thread(cli, "dead", "list", "--app", APP, "--json") == 0
    listed = {t["id"]: t for t in orjson.loads(capsys.readouterr().out)["tasks"]}
    assert listed[bad.id]["dead_reason"] == "undecodable state"
    assert "\\xff\\xfe{\\xc3 not json" in listed[bad.id]["last_error"]["message"]
    for command in ("dead", "task"):
        assert await asyncio.to_thread(cli, command, "show", bad.id, "--app", APP) == 0
        assert "undecodable state" in capsys.readouterr().out


async def test_an_error_list_of_non_utf8_bytes_is_shown_flagged_not_fatal(
    bus: Bus, aredis: Redis, cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stored errors that are not UTF-8 JSON become one flagged entry; the rest is shown."""
    broken = await bus.enqueue(APP, "job", 1)
    garbled = await bus.enqueue(APP, "job", 2)
    fine = await bus.enqueue(APP, "job", 3)
    now = clock.now_ms()
    for ref in (broken, garbled, fine):
        await aredis.hset(
            KEYS.state, ref.id, orjson.dumps({"s": "dead", "a": 1, "m": 1, "tf": now})
        )
        await aredis.zadd(KEYS.dead, {ref.id: now})
    await aredis.hset(KEYS.errors, broken.id, b"\x00\xff[{not json")
    await aredis.hset(KEYS.errors, garbled.id, b'[{"type": "Boom", "message": "caf\xe9"}]')
    letters = {t.id: t for t in await list_dead(aredis, "bus", APP)}
    assert letters.keys() == {broken.id, garbled.id, fine.id}
    [error] = letters[broken.id].task.info.errors
    assert error.type == "UnreadableErrors"
    assert "not UTF-8 JSON" in error.message
    [error] = letters[garbled.id].task.info.errors
    assert (error.type, error.message) == ("Boom", "caf\ufffd")
    assert await asyncio.to_thread(cli, "dead", "list", "--app", APP) == 0
    assert "UnreadableErrors" in capsys.readouterr().out
    assert await asyncio.to_thread(cli, "task", "show", broken.id, "--app", APP) == 0
    assert await bus.get_task(APP, broken.id) is not None


async def test_event_show_flags_an_envelope_that_is_not_utf8_json(
    aredis: Redis, cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pending event of non-UTF-8 bytes is shown flagged with the reason, exit 0."""
    keys = BusKeys("bus")
    await aredis.hset(keys.events, "BAD", b'{"type": "order.placed", "x": "\xff\x1b[2J"}')
    await aredis.zadd(keys.pending, {"BAD": clock.now_ms()})
    assert await asyncio.to_thread(cli, "event", "show", "BAD") == 0
    out = capsys.readouterr().out
    assert "UNREADABLE" in out
    assert "\\x1b[2J" in out
    assert "\x1b" not in out
    assert await asyncio.to_thread(cli, "event", "show", "BAD", "--json") == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["pending"] is True
    assert doc["envelope"] is None
    assert "not UTF-8 JSON" in doc["envelope_error"]
    assert doc["envelope_raw"].startswith('{"type": "order.placed"')


async def test_claim_dead_letters_a_queued_id_with_neither_state_nor_record(
    bus: Bus, aredis: Redis
) -> None:
    """An id in the ready list with nothing stored is dead-lettered and reported, not dropped."""
    good = await bus.enqueue(APP, "job", 1)
    await aredis.lpush(QUEUE.ready, "ghost")
    result = await engine.claim(
        aredis, KEYS, ["default"], now_ms=clock.now_ms(), lease_ms=1000, max_tasks=5, worker_id="w"
    )
    assert [t.id for t in result.tasks] == [good.id]
    assert result.damaged == [("ghost", "record missing")]
    letter = await get_dead(aredis, "bus", APP, "ghost")
    assert letter is not None
    assert letter.reason == "record missing"
    assert "state and record missing" in letter.task.info.errors[0].message


async def test_claim_dead_letters_a_queued_id_that_is_not_utf8_under_a_readable_id(
    bus: Bus, aredis: Redis
) -> None:
    """A non-UTF-8 id would fail the whole claim reply: it is moved to a hex id and buried."""
    good = await bus.enqueue(APP, "job", 1)
    ref = await bus.enqueue(APP, "job", 2)
    raw_id = b"bad-\xff\xfe"
    for key in (KEYS.state, KEYS.tasks):
        await aredis.hset(key, raw_id, await aredis.hget(key, ref.id))
    await aredis.lpush(QUEUE.ready, raw_id)
    # A valid non-ASCII id is claimed as usual.
    accented = await bus.enqueue(APP, "job", 3, id="café-1")
    result = await engine.claim(
        aredis, KEYS, ["default"], now_ms=clock.now_ms(), lease_ms=1000, max_tasks=5, worker_id="w"
    )
    assert {t.id for t in result.tasks} == {good.id, ref.id, accented.id}
    new_id = "damaged-id." + raw_id.hex()
    assert result.damaged == [(new_id, "id not UTF-8")]
    assert not await aredis.hexists(KEYS.state, raw_id)
    assert not await aredis.hexists(KEYS.tasks, raw_id)
    letter = await get_dead(aredis, "bus", APP, new_id)
    assert letter is not None
    assert letter.reason == "id not UTF-8"
    assert raw_id.hex() in letter.task.info.errors[0].message
    assert letter.task.record is not None  # the record was moved with it


async def test_worker_logs_each_damaged_task_once(bus: Bus, aredis: Redis, logs: Logs) -> None:
    """The worker logs task_damaged with the id and reason, once per damaged task."""
    done: list[Any] = []
    app = shop(done)
    await aredis.lpush(QUEUE.ready, "ghost")
    stale = await bus.enqueue(app, "job", "bad")
    await aredis.hset(KEYS.state, stale.id, b"{garbage")
    async with running_worker(app, aredis, concurrency=1):
        good = await bus.enqueue(app, "job", "good")
        await task_in_state(bus, APP, good.id, TaskState.SUCCEEDED)
    damaged = [e for e in logs if e["event"] == "task_damaged"]
    assert sorted((e["task_id"], e["reason"]) for e in damaged) == sorted(
        [("ghost", "record missing"), (stale.id, "undecodable state")]
    )
    assert all(e["log_level"] == "error" and e["app"] == APP for e in damaged)


async def test_dead_list_and_status_survive_ids_and_names_that_are_not_utf8(
    bus: Bus, aredis: Redis, cli_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A non-UTF-8 dead-set member, queue name or worker id costs that entry, not the command."""
    ref = await bus.enqueue(APP, "job", 1)
    now = clock.now_ms()
    await aredis.hset(KEYS.state, ref.id, orjson.dumps({"s": "dead", "a": 1, "m": 1, "tf": now}))
    await aredis.zadd(KEYS.dead, {ref.id.encode(): now, b"bad-\xff": now + 1})
    await aredis.sadd(KEYS.queues, b"q-\xfe")
    await aredis.zadd(KEYS.beats, {b"w-\xfd": now})
    # The oldest waiting task of a queue, with a state that does not decode.
    waiting = await bus.enqueue(APP, "job", 2, queue="slow")
    await aredis.hset(KEYS.state, waiting.id, b"\xff{garbage")
    assert [t.id for t in await list_dead(aredis, "bus", APP)] == [ref.id]
    assert await asyncio.to_thread(cli, "dead", "list", "--app", APP) == 0
    assert ref.id in capsys.readouterr().out
    assert await asyncio.to_thread(cli, "status") == 0
    out = capsys.readouterr().out
    assert "q-\\xfe" in out
    assert "w-\\xfd" in out
    assert "slow" in out


@pytest.mark.parametrize("planted", [b"\xff{garbage", b'{"s": "weird", "a": 1}', b"[1, 2]"])
async def test_a_dead_task_whose_state_was_damaged_is_listed_flagged_and_can_be_purged(
    bus: Bus,
    aredis: Redis,
    cli_env: Settings,
    capsys: pytest.CaptureFixture[str],
    planted: bytes,
) -> None:
    """A dead letter's damaged state is shown as unreadable; replay skips it, purge removes it."""
    healthy = await bus.enqueue(APP, "job", 1)
    damaged = await bus.enqueue(APP, "job", 2)
    now = clock.now_ms()
    for ref in (healthy, damaged):
        await aredis.hset(
            KEYS.state, ref.id, orjson.dumps({"s": "dead", "a": 1, "m": 1, "tf": now})
        )
        await aredis.zadd(KEYS.dead, {ref.id: now})
    await aredis.hset(KEYS.state, damaged.id, planted)
    letters = {t.id: t for t in await list_dead(aredis, "bus", APP)}
    assert letters.keys() == {healthy.id, damaged.id}
    doc = letters[damaged.id].to_doc()
    assert doc["state"] == "unreadable"
    assert doc["state_error"] is not None
    assert letters[healthy.id].to_doc()["state_error"] is None
    assert await asyncio.to_thread(cli, "dead", "list", "--app", APP) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if damaged.id in line)
    assert "state unreadable" in row
    assert await asyncio.to_thread(cli, "task", "show", damaged.id, "--app", APP) == 0
    assert "UNREADABLE" in capsys.readouterr().out
    report = await replay(aredis, "bus", APP, everything=True)
    assert report.replayed == [healthy.id]
    assert "state is unreadable" in report.skipped[damaged.id]
    assert await asyncio.to_thread(cli, "dead", "purge", "--app", APP, "--all", "--yes") == 0
    assert await aredis.zrange(KEYS.dead, 0, -1) == []
    assert not await aredis.hexists(KEYS.state, damaged.id)


async def test_a_state_damaged_while_the_task_runs_costs_that_task_in_every_batch(
    bus: Bus, aredis: Redis
) -> None:
    """Renew, settle, release, replay and purge reject the damaged task and do the others."""
    bad = await bus.enqueue(APP, "job", 1)
    good = await bus.enqueue(APP, "job", 2)
    now = clock.now_ms()
    claimed = await engine.claim(
        aredis, KEYS, ["default"], now_ms=now, lease_ms=60_000, max_tasks=2, worker_id="w"
    )
    tokens = {t.id: t.token for t in claimed.tasks}
    await aredis.hset(KEYS.state, bad.id, b"\xff{garbage")
    held = [engine.Held(i, tokens[i], "default") for i in (bad.id, good.id)]
    assert await engine.renew(aredis, KEYS, held, now_ms=now, lease_ms=60_000) == [bad.id]
    assert await engine.release(aredis, KEYS, held, now_ms=now) == 1
    await aredis.zadd(KEYS.dead, {bad.id: now})
    assert await features.replay(aredis, KEYS, "default", now, [bad.id]) == [False]
    assert await features.purge(aredis, KEYS, [bad.id]) == [True]
    again = await bus.enqueue(APP, "job", 3)
    claimed = await engine.claim(
        aredis, KEYS, ["default"], now_ms=now, lease_ms=60_000, max_tasks=2, worker_id="w"
    )
    tokens = {t.id: t.token for t in claimed.tasks}
    await aredis.hset(KEYS.state, again.id, b"[1, 2]")
    outcomes = [engine.Outcome(i, tokens[i], "default", "ok") for i in (again.id, good.id)]
    rejected = await engine.settle(aredis, KEYS, outcomes, now_ms=now, retention_ms=60_000)
    assert rejected == [again.id]
    info = await bus.get_task(APP, good.id)
    assert info is not None
    assert info.state is TaskState.SUCCEEDED
