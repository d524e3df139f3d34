"""What the CLI loads: every command but ``demo`` runs without the demo's code."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO_ROOT


def loaded_modules(*args: str) -> set[str]:
    """The bus modules ``python -X importtime -m bus ARGS`` imports."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bus", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return set(re.findall(r"\|\s+(bus(?:\.[a-z_]+)*)\s*$", result.stderr, re.MULTILINE))


def test_help_loads_no_demo_module() -> None:
    """``python -m bus --help`` imports nothing below bus.demo (only its constants)."""
    modules = loaded_modules("--help")
    assert "bus.cli" in modules
    assert sorted(m for m in modules if m.startswith("bus.demo.")) == []


def test_demo_help_describes_the_command_without_running_code() -> None:
    """Even ``demo --help`` needs only the demo's constants, not bus.demo.run."""
    modules = loaded_modules("demo", "--help")
    assert "bus.demo.run" not in modules
