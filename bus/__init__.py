"""taskbus: a multi-app event bus on Redis, built on a durable task engine."""

from bus.app import App, TaskDef
from bus.client import Bus
from bus.context import Fail, Retry, TaskContext
from bus.default import apublish, publish, reset
from bus.enqueue import EnqueueItem, TaskRef
from bus.errors import BusError, ConfigError, RedisSetupError
from bus.events import Event
from bus.publish import EventSpec
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
    "EventSpec",
    "Fail",
    "RedisSetupError",
    "Retry",
    "Settings",
    "TaskContext",
    "TaskDef",
    "TaskInfo",
    "TaskRecord",
    "TaskRef",
    "TaskState",
    "Worker",
    "apublish",
    "publish",
    "reset",
]
