"""One adapter module per library; this module only maps rows to modules.

It imports no library: the harness runs everything library-specific in
subprocesses (:mod:`bench.peers.phase` and the workers), so each process
imports one library, with the Redis URL and row in its environment.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["ROWS", "load_module", "rows_for"]

# Row name -> adapter module, in the order rows are listed in results.
ROWS: dict[str, str] = {
    "taskbus": "taskbus",
    "celery": "celery",
    "celery-late": "celery",
    "rq": "rq",
    "rq-simple": "rq",
    "rq-retry": "rq",
    "dramatiq": "dramatiq",
    "arq": "arq",
    "arq-fast": "arq",
    "saq": "saq",
    "saq-retry": "saq",
    "taskiq": "taskiq",
    "taskiq-list": "taskiq",
    "huey": "huey",
}


def rows_for(names: list[str]) -> list[str]:
    """Expand ``--only`` names (rows or libraries) into rows, in table order.

    Raises:
        ValueError: A name is neither a row nor a library.
    """
    unknown = [n for n in names if n not in ROWS and n not in ROWS.values()]
    if unknown:
        raise ValueError(
            f"unknown row or library {', '.join(unknown)}; known rows: {', '.join(ROWS)}"
        )
    return [row for row, module in ROWS.items() if row in names or module in names]


def load_module(row: str) -> ModuleType:
    """Import the adapter module of a row (imports its library)."""
    return importlib.import_module(f"bench.peers.adapters.{ROWS[row]}")
