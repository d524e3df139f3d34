"""Tests of bus.config.settings: parsing BUS_* variables into validated Settings."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus.config.settings import ENV_VARS, Settings
from bus.errors import ConfigError


def test_defaults_apply_when_no_variable_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty environment gives the documented defaults, data dir absolute under cwd."""
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings == Settings(
        redis_url=None,
        data_dir=tmp_path.resolve() / ".bus",
        appendfsync="everysec",
        prefix="bus",
        schemas_dir=Path("schemas"),
        apps_dir=Path("apps"),
        log_level="info",
        max_payload_bytes=262144,
        dedup_window_s=86400,
        retention_s=86400,
    )
    assert settings.data_dir.is_absolute()


@pytest.mark.parametrize(
    ("variable", "raw", "field", "expected"),
    [
        ("BUS_REDIS_URL", "redis://localhost:6380/2", "redis_url", "redis://localhost:6380/2"),
        ("BUS_REDIS_URL", "rediss://u:p@cache:6380", "redis_url", "rediss://u:p@cache:6380"),
        ("BUS_REDIS_URL", "unix:///run/redis.sock", "redis_url", "unix:///run/redis.sock"),
        ("BUS_REDIS_URL", "", "redis_url", None),
        ("BUS_DATA_DIR", "/var/lib/bus", "data_dir", Path("/var/lib/bus")),
        ("BUS_APPENDFSYNC", "always", "appendfsync", "always"),
        ("BUS_APPENDFSYNC", "NO", "appendfsync", "no"),
        ("BUS_PREFIX", "acme-prod_1", "prefix", "acme-prod_1"),
        ("BUS_SCHEMAS_DIR", "/etc/bus/schemas", "schemas_dir", Path("/etc/bus/schemas")),
        ("BUS_APPS_DIR", "src/apps", "apps_dir", Path("src/apps")),
        ("BUS_LOG_LEVEL", "WARNING", "log_level", "warning"),
        ("BUS_LOG_LEVEL", " debug ", "log_level", "debug"),
        ("BUS_MAX_PAYLOAD_BYTES", "1048576", "max_payload_bytes", 1048576),
        ("BUS_DEDUP_WINDOW_S", "3600", "dedup_window_s", 3600),
        ("BUS_RETENTION_S", "60", "retention_s", 60),
    ],
)
def test_each_variable_sets_its_field(variable: str, raw: str, field: str, expected: Any) -> None:
    """Every BUS_* variable is parsed into its field."""
    assert getattr(Settings.from_env({variable: raw}), field) == expected


def test_every_field_has_a_variable() -> None:
    """The variable table covers every settings field, so none is unreachable."""
    assert set(ENV_VARS) == {f.name for f in dataclasses.fields(Settings)}


def test_relative_data_dir_is_resolved_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative BUS_DATA_DIR becomes absolute, so a later chdir does not move it."""
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({"BUS_DATA_DIR": "state/bus"}).data_dir == (
        tmp_path.resolve() / "state" / "bus"
    )


@pytest.mark.parametrize(
    ("variable", "raw", "allowed"),
    [
        ("BUS_REDIS_URL", "http://localhost:6379", "redis://, rediss:// or unix://"),
        ("BUS_REDIS_URL", "localhost:6379", "redis://, rediss:// or unix://"),
        ("BUS_REDIS_URL", "redis://host:notaport", "redis://, rediss:// or unix://"),
        ("BUS_REDIS_URL", "unix://", "a socket path"),
        ("BUS_APPENDFSYNC", "sometimes", "one of always, everysec, no"),
        ("BUS_PREFIX", "a:b", "without '{', '}', ':' or whitespace"),
        ("BUS_PREFIX", "{bus}", "without '{', '}', ':' or whitespace"),
        ("BUS_PREFIX", "my bus", "without '{', '}', ':' or whitespace"),
        ("BUS_LOG_LEVEL", "verbose", "one of debug, info, warning, error"),
        ("BUS_MAX_PAYLOAD_BYTES", "0", "a positive integer"),
        ("BUS_MAX_PAYLOAD_BYTES", "-5", "a positive integer"),
        ("BUS_MAX_PAYLOAD_BYTES", "256k", "a positive integer"),
        ("BUS_DEDUP_WINDOW_S", "1.5", "a positive integer"),
        ("BUS_RETENTION_S", "forever", "a positive integer"),
    ],
)
def test_bad_value_error_names_variable_value_and_what_is_allowed(
    variable: str, raw: str, allowed: str
) -> None:
    """A bad value raises ConfigError naming the variable, the value and the rule."""
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env({variable: raw})
    message = str(excinfo.value)
    assert variable in message
    assert raw.strip() in message
    assert allowed in message


@pytest.mark.parametrize("variable", sorted(set(ENV_VARS.values()) - {"BUS_REDIS_URL"}))
def test_empty_value_is_an_error_except_for_the_redis_url(variable: str) -> None:
    """An empty variable is refused rather than silently meaning the default."""
    with pytest.raises(ConfigError, match=f"{variable} is set but empty"):
        Settings.from_env({variable: "  "})


def test_password_in_a_bad_redis_url_is_not_echoed() -> None:
    """The error for a bad URL hides its password."""
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env({"BUS_REDIS_URL": "http://admin:hunter2@cache:6379"})
    assert "hunter2" not in str(excinfo.value)
    assert "admin:***@cache:6379" in str(excinfo.value)


def test_unknown_bus_variable_is_an_error_with_a_suggestion() -> None:
    """A misspelt BUS_ variable is named, with the variable it probably meant."""
    with pytest.raises(ConfigError, match=r"BUS_PREFX \(did you mean BUS_PREFIX\?\)"):
        Settings.from_env({"BUS_PREFX": "acme"})


def test_all_unknown_bus_variables_are_named_at_once() -> None:
    """Every unknown BUS_ variable is listed, not only the first."""
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env({"BUS_COLOUR": "blue", "BUS_REDIS_URI": "redis://x"})
    assert "BUS_COLOUR" in str(excinfo.value)
    assert "BUS_REDIS_URI (did you mean BUS_REDIS_URL?)" in str(excinfo.value)


def test_test_suite_and_foreign_variables_are_ignored() -> None:
    """BUS_TEST_* (the suite's) and non-BUS variables do not trip the unknown check."""
    settings = Settings.from_env(
        {"BUS_TEST_REDIS_SERVER": "/opt/redis", "BUSY": "1", "REDIS_URL": "x", "PATH": "/bin"}
    )
    assert settings.redis_url is None


def test_os_environ_is_read_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """from_env() without an argument reads the process environment."""
    for name in list(os.environ):
        if name.startswith("BUS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BUS_PREFIX", "fromenv")
    assert Settings.from_env().prefix == "fromenv"


def test_settings_are_frozen() -> None:
    """Settings cannot be mutated after construction."""
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.prefix = "other"  # type: ignore[misc]


def test_replace_returns_a_validated_copy() -> None:
    """replace() changes fields on a copy and validates the new values."""
    settings = Settings()
    changed = settings.replace(prefix="other", retention_s=5)
    assert (changed.prefix, changed.retention_s) == ("other", 5)
    assert settings.prefix == "bus"
    with pytest.raises(ConfigError, match=r"Settings\.retention_s=0 is not allowed"):
        settings.replace(retention_s=0)


def test_direct_construction_is_validated() -> None:
    """Building Settings directly applies the same rules as from_env."""
    with pytest.raises(ConfigError, match=r"Settings\.log_level='INFO'"):
        Settings(log_level="INFO")
    with pytest.raises(ConfigError, match=r"Settings\.max_payload_bytes=True"):
        Settings(max_payload_bytes=True)


@given(st.text(max_size=20))
def test_prefix_is_accepted_exactly_when_nonempty_without_separators(prefix: str) -> None:
    """A prefix is valid iff non-empty with no braces, colons or whitespace."""
    valid = bool(prefix) and not any(c in "{}:" or c.isspace() for c in prefix)
    try:
        Settings(prefix=prefix)
    except ConfigError:
        assert not valid
    else:
        assert valid


def test_redis_timeout_takes_fractions_of_a_second() -> None:
    """BUS_REDIS_TIMEOUT_S is a positive number of seconds, 5 by default."""
    assert Settings.from_env({}).redis_timeout_s == 5.0
    assert Settings.from_env({"BUS_REDIS_TIMEOUT_S": "0.25"}).redis_timeout_s == 0.25


@pytest.mark.parametrize("raw", ["0", "-1", "abc", "nan", "inf"])
def test_redis_timeout_refuses_what_is_not_a_positive_finite_number(raw: str) -> None:
    """A zero, negative, non-numeric or infinite timeout is a ConfigError naming the variable."""
    with pytest.raises(ConfigError, match=r"BUS_REDIS_TIMEOUT_S=.*a positive number of seconds"):
        Settings.from_env({"BUS_REDIS_TIMEOUT_S": raw})
