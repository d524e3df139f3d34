"""``python -m bus``: the command-line interface (see :mod:`bus.cli`)."""

import sys

from bus.cli import main

if __name__ == "__main__":
    sys.exit(main())
