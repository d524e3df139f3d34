"""The demo: its event stream, its output, and whole runs as the README's first command."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from redis.asyncio import Redis

from bus.cli import main as cli_main
from bus.config.settings import ENV_PREFIX, TEST_ENV_PREFIX, Settings
from bus.core import clock
from bus.core.task import TaskInfo, TaskState
from bus.demo.events import LARGE_ORDER_CENTS, plan_events
from bus.demo.procs import worker_env
from bus.demo.screen import Screen, summary_line, summary_table
from bus.demo.state import AppCounts, Snapshot
from bus.events.schemas import SchemaRegistry
from bus.local.embedded import embedded_status
from bus.store.admin import clear_prefix
from bus.store.keys import AppKeys, BusKeys
from tests.conftest import raw, raw_or_none, texts

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_TIMEOUT_S = 90.0

STARTED_RE = re.compile(r"started (.+?) worker \(pid (\d+)")
STOPPED_RE = re.compile(r"stopped (.+?) worker \(pid (\d+)")


# -- helpers ----------------------------------------------------------------------------


def demo_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The environment of a demo run: no BUS_* from outside, the repo's apps and schemas."""
    env = {
        k: v
        for k, v in os.environ.items()
        if (not k.startswith(ENV_PREFIX) or k.startswith(TEST_ENV_PREFIX))
        and k != "BILLING_POISON_FIXED"
    }
    env.update(
        BUS_APPS_DIR=str(REPO_ROOT / "apps"),
        BUS_SCHEMAS_DIR=str(REPO_ROOT / "schemas"),
        BUS_DATA_DIR=str(tmp_path / "data"),
    )
    env.update(overrides)
    return env


def run_demo(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bus demo ARGS`` to the end; output and errors as text."""
    return subprocess.run(
        [sys.executable, "-m", "bus", "demo", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )


def worker_pids(output: str) -> tuple[list[int], list[int]]:
    """The pids of the workers the demo says it started, and those it says it stopped."""
    started = [int(m.group(2)) for m in STARTED_RE.finditer(output)]
    stopped = [int(m.group(2)) for m in STOPPED_RE.finditer(output)]
    return started, stopped


def running_workers(marker: str) -> list[int]:
    """Pids of live ``bus.worker`` processes whose environment holds ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"bus.worker" in cmdline and marker.encode() in environ and state != "Z":
            found.append(int(proc.name))
    return found


def assert_no_worker_left(output: str, marker: str) -> None:
    """Every worker the demo started was stopped, and no worker of this run is alive."""
    started, stopped = worker_pids(output)
    assert started, output
    assert sorted(started) == sorted(stopped), output
    assert running_workers(marker) == []


def poison_task(url_or_client: redis.Redis, task_id: str) -> TaskInfo:
    """Read the poison order's task in billing under the demo's prefix."""
    keys = AppKeys("demo", "billing")
    state = url_or_client.hget(keys.state, task_id)
    assert state is not None, f"billing has no task {task_id}"
    return TaskInfo.from_raw(
        task_id,
        raw(state),
        raw_or_none(url_or_client.hget(keys.tasks, task_id)),
        raw_or_none(url_or_client.hget(keys.errors, task_id)),
    )


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A sync client on the flushed private server."""
    with redis.Redis.from_url(redis_url) as conn:
        yield conn


# -- the event stream -------------------------------------------------------------------


def test_event_plan_is_deterministic_and_has_one_poison_order() -> None:
    """The same arguments give the same events; exactly one is the poison order."""
    first = plan_events(40, 2.0)
    assert first == plan_events(40, 2.0)
    assert len(first) == 40
    poison = [e for e in first if e.poison]
    assert len(poison) == 1
    assert poison[0].type == "order.placed"
    assert poison[0].payload["poison"] is True
    assert first.index(poison[0]) == 10


def test_event_plan_spreads_events_over_the_duration() -> None:
    """Offsets never decrease and stay within the publishing time."""
    offsets = [e.at_s for e in plan_events(300, 10.0)]
    assert offsets == sorted(offsets)
    assert offsets[0] == 0
    assert offsets[-1] < 10.0


def test_event_plan_payloads_are_valid_and_mixed() -> None:
    """Every payload passes its schema; the mix has each type, plans and declined orders."""
    schemas = SchemaRegistry.load(REPO_ROOT / "schemas")
    events = plan_events(40, 2.0)
    for event in events:
        schemas.validate(event.type, event.payload)
    assert {e.type for e in events} == {"user.signed_up", "order.placed", "payment.failed"}
    plans = {e.payload["plan"] for e in events if e.type == "user.signed_up"}
    assert "free" in plans
    assert plans & {"pro", "enterprise"}
    assert any(
        e.payload["amount_cents"] > LARGE_ORDER_CENTS for e in events if e.type == "order.placed"
    )


def test_event_plan_refuses_an_empty_stream() -> None:
    """A count below one is an error that names it."""
    with pytest.raises(ValueError, match="count must be >= 1"):
        plan_events(0, 1.0)


# -- the child environment and the screen -----------------------------------------------


def test_worker_env_carries_the_demo_settings(tmp_path: Path) -> None:
    """Every settings field becomes its variable; an unset Redis URL and None extras are removed."""
    settings = Settings(data_dir=tmp_path, prefix="demo", apps_dir=Path("apps"))
    base = {"BUS_REDIS_URL": "redis://elsewhere", "PATH": "/bin", "BILLING_POISON_FIXED": "1"}
    env = worker_env(base, settings, {"BILLING_POISON_FIXED": None})
    assert env["BUS_PREFIX"] == "demo"
    assert env["BUS_DATA_DIR"] == str(tmp_path.resolve())
    assert env["BUS_APPS_DIR"] == str(Path("apps").resolve())
    assert env["PATH"] == "/bin"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert "BUS_REDIS_URL" not in env
    assert "BILLING_POISON_FIXED" not in env


SNAP = Snapshot(
    {
        "billing": AppCounts(delivered=10, waiting=2, running=1, retrying=1, dead=1),
        "analytics": AppCounts(waiting=25),
    },
    events=32,
    pending=1,
)


def test_summary_shows_every_app_and_column() -> None:
    """The table has a header line, a column row and one row per app, counts aligned."""
    lines = summary_table(3.0, 30, 300, SNAP, {"billing": "running", "analytics": "offline"})
    assert lines[0] == "  3.0s  published 30/300 events, +2 follow-ups by handlers, 1 pending"
    assert lines[1].split() == [
        "APP",
        "WORKER",
        "DELIVERED",
        "WAITING",
        "RUNNING",
        "RETRYING",
        "DEAD",
    ]
    assert lines[2].split() == ["billing", "running", "10", "2", "1", "1", "1"]
    assert lines[3].split() == ["analytics", "offline", "0", "25", "0", "0", "0"]
    line = summary_line(3.0, 30, 300, SNAP, {"billing": "running"})
    assert "billing (running) 10 delivered, 2 waiting, 1 running, 1 retrying, 1 dead" in line
    assert "analytics (-) 0 delivered, 25 waiting" in line


def test_plain_screen_prints_the_summary_at_most_once_a_second() -> None:
    """Without a terminal, summaries are rate limited (unless forced) and steps are plain lines."""
    out = io.StringIO()
    screen = Screen(out, live=False, plain_every_s=1.0)
    screen.show(0.0, 0, 10, SNAP, {})
    screen.show(0.5, 1, 10, SNAP, {})
    screen.note("a step")
    screen.show(1.2, 2, 10, SNAP, {})
    screen.show(1.3, 3, 10, SNAP, {}, force=True)
    lines = out.getvalue().splitlines()
    assert [line.split("published ")[1].split("/")[0] for line in lines if "published" in line] == [
        "0",
        "2",
        "3",
    ]
    assert "a step" in lines
    assert "\x1b[" not in out.getvalue()


def test_live_screen_redraws_the_summary_below_each_step() -> None:
    """On a terminal a step erases the summary, is printed, and the summary is drawn again."""
    out = io.StringIO()
    screen = Screen(out, live=True)
    screen.show(1.0, 5, 10, SNAP, {})
    screen.note("a step")
    text = out.getvalue()
    erase = "\x1b[4A\r\x1b[J"  # the summary is 4 lines: header, columns, two apps
    assert text.count(erase) == 1
    before, after = text.split(erase)
    assert before.count("published 5/10") == 1
    assert after.startswith("a step\n")
    assert after.count("published 5/10") == 1


# -- Redis helpers ------------------------------------------------------------------------


async def test_clear_prefix_deletes_only_the_prefix_keys(aredis: Redis) -> None:
    """SCAN + UNLINK removes every ``demo:`` key and nothing else, in batches."""
    for i in range(1200):
        await aredis.set(f"demo:key:{i}", 1)
    await aredis.set("demox:other", 1)
    await aredis.set("bus:app:{billing}:state", 1)
    assert await clear_prefix(aredis, "demo", batch=100) == 1200
    assert sorted(await aredis.keys("*")) == [b"bus:app:{billing}:state", b"demox:other"]


# -- the command line ---------------------------------------------------------------------


def test_demo_help_names_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m bus demo --help`` documents --short, --events and --verbose."""
    with pytest.raises(SystemExit) as exited:
        cli_main(["demo", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for option in ("--short", "--events N", "--verbose"):
        assert option in out


def test_demo_refuses_an_event_count_out_of_range(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--events 0 is bad input (exit 2) and nothing starts."""
    monkeypatch.setenv("BUS_DATA_DIR", str(tmp_path))
    assert cli_main(["demo", "--events", "0"]) == 2
    assert "--events must be between 1 and" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


# -- whole runs ---------------------------------------------------------------------------


def test_short_demo_passes_on_a_private_redis(
    redis_url: str, client: redis.Redis, tmp_path: Path
) -> None:
    """Short run: PASS, poison dead then delivered, analytics caught up, no worker left."""
    client.set("keep:me", "1")
    client.hset(BusKeys("bus").events, "k", "{}")
    client.set("demo:stale", "1")
    result = run_demo(demo_env(tmp_path, BUS_REDIS_URL=redis_url), tmp_path, "--short")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "verdict: PASS - all" in out

    dead = re.search(r"dead letter in billing: task (\S+) failed (\d+) of (\d+) attempts", out)
    assert dead is not None, out
    assert dead.group(2) == dead.group(3)
    assert "last error: ValueError: card processor rejected order o-poison" in out
    assert "replayed 1 dead task(s) of billing" in out
    assert "the poison order was delivered by billing after the replay" in out
    task = poison_task(client, dead.group(1))
    assert task.state is TaskState.SUCCEEDED
    assert task.replays == 1
    assert [e.type for e in task.errors] == ["ValueError"] * int(dead.group(3))

    late = re.search(r"starting analytics late: (\d+) tasks waited for it", out)
    assert late is not None, out
    assert int(late.group(1)) > 0
    assert f"analytics caught up: its backlog of {late.group(1)} delivered" in out
    assert out.index("started billing worker") < out.index("started analytics worker")

    assert_no_worker_left(out, f"BUS_REDIS_URL={redis_url}")
    assert client.get("keep:me") == b"1"
    assert client.hget(BusKeys("bus").events, "k") == b"{}"
    assert client.get("demo:stale") is None
    for app in ("billing", "email", "analytics"):
        log = (tmp_path / "data" / "demo" / f"{app}.log").read_text()
        assert "worker_started" in log


def test_short_demo_passes_on_the_embedded_redis(
    embedded_settings: Settings, tmp_path: Path
) -> None:
    """With no BUS_REDIS_URL the demo starts the embedded server, passes, and leaves it running."""
    data_dir = embedded_settings.data_dir
    env = demo_env(tmp_path, BUS_DATA_DIR=str(data_dir))
    result = run_demo(env, tmp_path, "--short")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "verdict: PASS - all" in out
    assert f"redis: the embedded server in {data_dir}" in out
    assert f"BUS_DATA_DIR={data_dir} python -m bus redis stop" in out
    assert embedded_status(embedded_settings).running
    assert_no_worker_left(out, f"BUS_DATA_DIR={data_dir}")


def test_demo_fails_its_verdict_when_deliveries_die(
    redis_url: str, client: redis.Redis, tmp_path: Path
) -> None:
    """An app whose handler fails some events makes the verdict FAIL with exit 1."""
    apps = tmp_path / "apps"
    shutil.copytree(REPO_ROOT / "apps", apps)
    with (apps / "analytics" / "handlers.py").open("a") as handlers:
        handlers.write(
            "\n\n_count = count\n\n\n"
            "async def count(event, ctx):  # noqa: F811\n"
            "    if event.type == 'payment.failed':\n"
            "        from bus import Fail\n"
            "        raise Fail('analytics cannot count payments today')\n"
            "    await _count(event, ctx)\n"
        )
    env = demo_env(tmp_path, BUS_REDIS_URL=redis_url, BUS_APPS_DIR=str(apps))
    result = run_demo(env, tmp_path, "--short")
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert re.search(r"\[FAIL\] no dead letter after the replay \(dead: analytics \d+\)", out), out
    assert re.search(r"\[FAIL\] analytics: \d+ delivered", out), out
    assert "[ok] billing:" in out
    assert "verdict: FAIL - 2 of" in out
    assert_no_worker_left(out, f"BUS_REDIS_URL={redis_url}")


def test_demo_refuses_to_run_beside_a_live_demo(
    redis_url: str, client: redis.Redis, tmp_path: Path
) -> None:
    """Live worker heartbeats under the demo prefix stop a second demo (exit 2), keys untouched."""
    keys = AppKeys("demo", "billing")
    client.zadd(keys.beats, {"w1": clock.now_ms()})
    client.hset(keys.workers, "w1", orjson.dumps({"pid": 4242, "host": "elsewhere"}))
    result = run_demo(demo_env(tmp_path, BUS_REDIS_URL=redis_url), tmp_path, "--short")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "another demo is running" in result.stderr
    assert "billing pid 4242 on elsewhere" in result.stderr
    assert client.zcard(keys.beats) == 1
    assert worker_pids(result.stdout) == ([], [])


def test_demo_without_a_reachable_redis_is_a_setup_error(tmp_path: Path) -> None:
    """A Redis URL nobody answers on: exit 2 with a message, and no worker started."""
    env = demo_env(tmp_path, BUS_REDIS_URL=f"unix://{tmp_path}/nobody.sock")
    result = run_demo(env, tmp_path, "--short")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot reach the server at BUS_REDIS_URL" in result.stderr
    assert worker_pids(result.stdout) == ([], [])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_demo_stops_its_workers(
    redis_url: str, tmp_path: Path, sig: signal.Signals
) -> None:
    """Ctrl-C (or SIGTERM) mid-run ends every worker the demo started, and exits 130."""
    env = demo_env(tmp_path, BUS_REDIS_URL=redis_url)
    args = [sys.executable, "-m", "bus", "demo"]
    with subprocess.Popen(
        args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            seen = ""
            deadline = time.monotonic() + 30
            while seen.count("started ") < 2 and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                seen += line
            assert seen.count("started ") == 2, seen
            proc.send_signal(sig)
            rest, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    out = seen + rest
    assert proc.returncode == 130, out + err
    assert f"interrupted ({sig.name}): stopping the workers" in out
    assert "verdict" not in out
    assert_no_worker_left(out, f"BUS_REDIS_URL={redis_url}")


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="no setpriv (util-linux) here")
def test_workers_end_when_the_demo_is_killed(redis_url: str, tmp_path: Path) -> None:
    """A demo killed with SIGKILL cannot clean up; its workers end anyway (parent-death signal)."""
    env = demo_env(tmp_path, BUS_REDIS_URL=redis_url)
    marker = f"BUS_REDIS_URL={redis_url}"
    args = [sys.executable, "-m", "bus", "demo"]
    with subprocess.Popen(
        args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            seen = ""
            while seen.count("started ") < 2:
                line = proc.stdout.readline()
                assert line, seen
                seen += line
            started, _ = worker_pids(seen)
            # A worker the demo just forked may not show in /proc as one yet
            # (it is still exec-ing): wait for both, with a deadline.
            deadline = time.monotonic() + 10
            while sorted(running_workers(marker)) != sorted(started):
                assert time.monotonic() < deadline, (running_workers(marker), started)
                time.sleep(0.02)
            proc.kill()
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
    deadline = time.monotonic() + 15
    while running_workers(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running_workers(marker) == []


def test_demo_feed_publishes_the_stream_to_the_configured_bus(
    redis_url: str, client: redis.Redis, tmp_path: Path
) -> None:
    """``python -m bus.demo.feed --sync --count N`` registers every app and publishes N events."""
    env = demo_env(tmp_path, BUS_REDIS_URL=redis_url)
    result = subprocess.run(
        [sys.executable, "-m", "bus.demo.feed", "--sync", "--count", "30", "--rate", "1000"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    keys = BusKeys("bus")
    apps = sorted(p.parent.name for p in (REPO_ROOT / "apps").glob("*/app.toml"))
    assert sorted(texts(client.hkeys(keys.subs))) == apps
    envelopes = [orjson.loads(raw) for raw in client.hvals(keys.events)]
    assert len(envelopes) == 30
    assert sum(1 for e in envelopes if e["data"].get("poison")) == 1
    assert client.zcard(keys.pending) == 0
    assert client.hlen(AppKeys("bus", "email").state) > 0
