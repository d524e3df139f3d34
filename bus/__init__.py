"""taskbus: a multi-app event bus on Redis, built on a durable task engine."""

from bus.client import Bus
from bus.config.settings import Settings
from bus.core.app import App, TaskDef
from bus.core.context import Fail, Retry, TaskContext
from bus.core.enqueue import EnqueueItem, TaskRef
from bus.core.schedule import Schedule, cron, every
from bus.core.task import TaskInfo, TaskRecord, TaskState
from bus.default import apublish, publish, reset
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
from bus.events.declarations import TaskNotDeclared
from bus.events.envelope import Event
from bus.events.publish import EventSpec
from bus.events.publish_results import EventNotRecorded
from bus.events.router import RoutingIncomplete
from bus.recurring import Recurring
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
