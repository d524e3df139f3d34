"""docker-compose.yml and the Dockerfile: valid, a durable Redis, one worker per app.

The compose file is read as text (the suite has no YAML dependency): a small
reader of its block-style layout extracts each service's image, command,
environment and volumes. The same checks run on the file itself and, where a
compose CLI is installed (``docker compose`` or the older ``docker-compose``;
neither needs a running engine for ``config``), on its normalized ``config``
output, which proves Docker reads the file the way these tests do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bus.demo.feed import build_parser as feed_parser
from bus.worker.__main__ import build_parser as worker_parser

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
REDIS_URL = "redis://redis:6379/0"

Services = dict[str, list[str]]


# -- a reader of the compose file's block-style YAML --------------------------------------


def service_blocks(text: str) -> Services:
    """The lines of each top-level service (two-space indentation, comments dropped)."""
    services: Services = {}
    inside = False
    current: str | None = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        if indent == 0:
            inside = line.rstrip() == "services:"
            current = None
        elif inside and indent == 2 and line.rstrip().endswith(":"):
            current = line.strip()[:-1]
            services[current] = []
        elif inside and current is not None:
            services[current].append(line)
    return services


def top_level_keys(text: str, section: str) -> list[str]:
    """The keys directly under a top-level section (``volumes:`` ...)."""
    keys: list[str] = []
    inside = False
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        if indent == 0:
            inside = line.rstrip() == f"{section}:"
        elif inside and indent == 2:
            keys.append(line.strip().split(":", 1)[0])
    return keys


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def field(block: list[str], key: str) -> tuple[str, list[str]]:
    """A service field: its inline value and the lines nested under it."""
    for i, line in enumerate(block):
        if len(line) - len(line.lstrip(" ")) == 4 and line.strip().startswith(f"{key}:"):
            inline = line.strip()[len(key) + 1 :].strip()
            nested = []
            for below in block[i + 1 :]:
                depth = len(below) - len(below.lstrip(" "))
                # A list may sit at its key's own indentation ("key:\n- a").
                if depth < 4 or (depth == 4 and not below.lstrip().startswith("- ")):
                    break
                nested.append(below.strip())
            return inline, nested
    return "", []


def items(block: list[str], key: str) -> list[str]:
    """A list field, flow (``["a", "b"]``) or block (``- a`` lines) style."""
    inline, nested = field(block, key)
    if inline:
        parsed = json.loads(inline)
        assert isinstance(parsed, list), f"{key}: {inline}"
        return [str(item) for item in parsed]
    return [_unquote(line[1:]) for line in nested if line.startswith("-")]


def environment(block: list[str]) -> dict[str, str]:
    """The environment of a service, as a map or as a ``KEY=value`` list."""
    _, nested = field(block, "environment")
    env = {}
    for line in nested:
        if line.startswith("-"):
            name, _, value = _unquote(line[1:]).partition("=")
        else:
            name, _, value = line.partition(":")
        env[name.strip()] = _unquote(value)
    return env


def worker_apps(services: Services) -> dict[str, str]:
    """Service name -> app, for every service running ``python -m bus.worker``."""
    found = {}
    for name, block in services.items():
        command = items(block, "command")
        if command[:3] == ["python", "-m", "bus.worker"]:
            found[name] = worker_parser().parse_args(command[3:]).app
    return found


def app_dirs() -> list[str]:
    """The example apps: directories of apps/ with an app.toml."""
    return sorted(p.parent.name for p in (REPO_ROOT / "apps").glob("*/app.toml"))


# -- the checks, on any compose text --------------------------------------------------------


def check_redis(services: Services, text: str) -> None:
    """Redis 7, AOF fsync'd on every write, no eviction, data in a named volume."""
    block = services["redis"]
    assert field(block, "image")[0] == "redis:7"
    command = items(block, "command")
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "always"
    assert options["--maxmemory-policy"] == "noeviction"
    # Short syntax (redis-data:/data[:rw]) or the long one docker compose normalizes to.
    volumes = field(block, "volumes")[1]
    short = any(_unquote(v[1:]).startswith("redis-data:/data") for v in volumes)
    long = "source: redis-data" in " ".join(volumes) and "target: /data" in " ".join(volumes)
    assert short or long, volumes
    assert "redis-data" in top_level_keys(text, "volumes")


def check_workers(services: Services) -> None:
    """One worker service per app directory, each on the compose Redis, built from the repo."""
    apps = worker_apps(services)
    assert sorted(apps.values()) == app_dirs()
    for name in apps:
        block = services[name]
        assert environment(block)["BUS_REDIS_URL"] == REDIS_URL
        inline, nested = field(block, "build")
        assert inline == "." or any(line.startswith("context:") for line in nested), name


def check_publisher(services: Services) -> None:
    """The publisher feeds the demo's events to the compose Redis, after syncing every app."""
    block = services["publisher"]
    command = items(block, "command")
    assert command[:3] == ["python", "-m", "bus.demo.feed"]
    args = feed_parser().parse_args(command[3:])
    assert args.sync
    assert args.rate > 0
    assert environment(block)["BUS_REDIS_URL"] == REDIS_URL


# -- tests ----------------------------------------------------------------------------------


def test_compose_file_runs_a_durable_redis() -> None:
    """The redis service: redis:7, appendonly yes, appendfsync always, noeviction, a volume."""
    text = COMPOSE_FILE.read_text()
    check_redis(service_blocks(text), text)


def test_compose_file_has_one_worker_per_app() -> None:
    """Every directory of apps/ has its worker service, and no worker names another app."""
    check_workers(service_blocks(COMPOSE_FILE.read_text()))


def test_compose_file_has_a_publisher() -> None:
    """The publisher service runs the demo feed against the compose Redis."""
    check_publisher(service_blocks(COMPOSE_FILE.read_text()))


def test_compose_reader_sees_what_the_file_holds() -> None:
    """The text reader finds the services of a known snippet, flow and block lists alike."""
    text = (
        "services:\n"
        "  a:\n"
        '    command: ["x", "--y", "1"]\n'
        "    environment:\n"
        "      K: v\n"
        "  b:\n"
        "    # a comment\n"
        "    command:\n"
        "      - x\n"
        '      - "yes"\n'
        "    environment:\n"
        "      - K=w\n"
        "volumes:\n"
        "  data:\n"
    )
    services = service_blocks(text)
    assert sorted(services) == ["a", "b"]
    assert items(services["a"], "command") == ["x", "--y", "1"]
    assert items(services["b"], "command") == ["x", "yes"]
    assert environment(services["a"]) == {"K": "v"}
    assert environment(services["b"]) == {"K": "w"}
    assert top_level_keys(text, "volumes") == ["data"]


def compose_cli() -> list[str] | None:
    """``docker compose`` when the plugin answers, else ``docker-compose``, else None."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy is not None:
        probe = subprocess.run([legacy, "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return [legacy]
    return None


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    """``docker compose config`` validates the file; its normalized output passes every check."""
    cli = compose_cli()
    if cli is None:
        why = (
            "neither `docker compose` nor `docker-compose` is installed, so docker-compose.yml "
            "is not validated by Docker here (the text checks of this module still ran)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}; .ci/run installs Debian's docker-compose")
        pytest.skip(why)
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), "config"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    normalized = result.stdout
    (tmp_path / "config.yml").write_text(normalized)
    services = service_blocks(normalized)
    assert sorted(services) == sorted(["redis", "publisher", *app_dirs()])
    check_redis(services, normalized)
    check_workers(services)
    check_publisher(services)


def test_dockerfile_installs_the_package_with_apps_and_schemas() -> None:
    """The image: python:3.11-slim, the package installed, apps/ and schemas/ copied."""
    text = (REPO_ROOT / "Dockerfile").read_text()
    froms = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    assert froms
    assert all(image == "python:3.11-slim" for image in froms)
    assert "pip install" in text
    assert "COPY apps/ apps/" in text
    assert "COPY schemas/ schemas/" in text
    assert "BUS_APPS_DIR=" in text
    assert "BUS_SCHEMAS_DIR=" in text


def test_dockerignore_keeps_the_build_context_small_but_complete() -> None:
    """Virtualenvs, git and the benchmarks stay out; what the Dockerfile copies stays in."""
    ignored = {
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "bench", ".bus"} <= ignored
    copied = []
    for line in (REPO_ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            copied += line.split()[1:-1]
    assert copied
    for source in copied:
        assert (REPO_ROOT / source).exists(), source
        assert source.rstrip("/") not in ignored, source
