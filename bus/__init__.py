"""taskbus: a multi-app event bus on Redis, built on a durable task engine."""

from bus.app import App, TaskDef
from bus.context import Fail, Retry, TaskContext
from bus.errors import BusError, ConfigError, RedisSetupError
from bus.task import TaskInfo, TaskRecord, TaskState
from bus.worker import Worker

__all__ = [
    "App",
    "BusError",
    "ConfigError",
    "Fail",
    "RedisSetupError",
    "Retry",
    "TaskContext",
    "TaskDef",
    "TaskInfo",
    "TaskRecord",
    "TaskState",
    "Worker",
]
