"""taskbus: a multi-app event bus on Redis, built on a durable task engine."""

from bus.app import App, TaskDef
from bus.client import Bus
from bus.context import Fail, Retry, TaskContext
from bus.declarations import TaskNotDeclared
from bus.default import apublish, publish, reset
from bus.enqueue import EnqueueItem, TaskRef
from bus.errors import (
    BusError,
    ConfigError,
    RedisAuthError,
    RedisCommandError,
    RedisPermissionError,
    RedisSetupError,
    RedisTLSError,
    RedisUnavailable,
)
from bus.events import Event
from bus.publish import EventNotRecorded, EventSpec
from bus.recurring import Recurring
from bus.router import RoutingIncomplete
from bus.schedule import Schedule, cron, every
from bus.settings import Settings
from bus.task import TaskInfo, TaskRecord, TaskState
from bus.worker import Worker

__all__ = [
    "App",
    "Bus",
    "BusError",
    "ConfigError",
    "EnqueueItem",
    "Event",
    "EventNotRecorded",
    "EventSpec",
    "Fail",
    "Recurring",
    "RedisAuthError",
    "RedisCommandError",
    "RedisPermissionError",
    "RedisSetupError",
    "RedisTLSError",
    "RedisUnavailable",
    "Retry",
    "RoutingIncomplete",
    "Schedule",
    "Settings",
    "TaskContext",
    "TaskDef",
    "TaskInfo",
    "TaskNotDeclared",
    "TaskRecord",
    "TaskRef",
    "TaskState",
    "Worker",
    "apublish",
    "cron",
    "every",
    "publish",
    "reset",
]

# ``bus.publish`` is both a submodule and the function: a later import of the
# submodule rebinds the package attribute to the module, so bind the function last.
from bus.default import publish  # noqa: F811
