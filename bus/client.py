"""The Bus object: the connection to Redis and everything a producer does with it.

A :class:`Bus` is built once and passed around (no hidden globals). It enqueues
tasks by name (an app given by name lends the task options its app.toml
declares, through the registry: ``bus.events.declarations``), publishes events
(validated against ``schemas/``), and reads tasks back by id. Clients and
schemas are created lazily on first use, so building a Bus does no I/O. Every
method raises taskbus's errors only: Redis trouble arrives as
:class:`bus.errors.RedisUnavailable` (unreachable, refused login, NOPERM, TLS)
or :class:`bus.errors.RedisCommandError`, the redis-py exception chained. The
module-level ``bus.publish`` convenience uses a default Bus built from the
environment on first call (see ``bus.default``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bus.config.settings import Settings
from bus.core.app import App
from bus.core.enqueue import EnqueueItem, TaskRef
from bus.core.task import TaskInfo
from bus.enqueue import enqueue_items, enqueue_items_sync
from bus.events.declarations import Declarations
from bus.events.registry_specs import TaskSpec
from bus.store import own, reads
from bus.store.connection import connect, connect_sync
from bus.store.keys import BusKeys, app_keys, validate_app_name
from bus.store.redis_errors import maps_redis_errors
from bus.store.types import AsyncClient, SyncClient

if TYPE_CHECKING:
    from bus.events.publish import EventSpec, Publisher
    from bus.events.publish_results import PublishReport
    from bus.events.schemas import SchemaRegistry

__all__ = ["Bus"]


class Bus:
    """A handle on the bus: publish events, enqueue tasks, read tasks.

    Args:
        settings: Where Redis, schemas and apps are (default: the environment).
        redis: An asyncio client to use instead of connecting from settings
            (``decode_responses=False``).
        sync_redis: A synchronous client, for :meth:`publish` and
            :meth:`enqueue_sync` from sync code.
        schemas: A loaded schema registry (default: ``settings.schemas_dir``).
        source: The ``source`` of published events (default: the host name).
        crash_after_record: Test hook: the process exits right after an event
            is recorded and before it is routed (a publisher dying mid-fan-out).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        redis: AsyncClient | None = None,
        sync_redis: SyncClient | None = None,
        schemas: SchemaRegistry | None = None,
        source: str | None = None,
        crash_after_record: bool = False,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.prefix = self.settings.prefix
        self._redis = redis
        self._sync_redis = sync_redis
        self._schemas = schemas
        self._source = source
        self._crash_after_record = crash_after_record
        self._publisher: Publisher | None = None
        self._owns = (redis is None, sync_redis is None)
        self._declarations = Declarations(BusKeys(self.prefix))

    # -- lazily built parts --------------------------------------------------

    @maps_redis_errors
    async def aredis(self) -> AsyncClient:
        """The asyncio client (connected from settings on first use).

        The first connection checks the server: one that evicts keys is refused
        (``RedisSetupError``), one that keeps nothing on disk is logged
        (``redis_not_persistent``).
        """
        if self._redis is None:
            self._redis = await connect(self.settings, check=True)
        return self._redis

    @maps_redis_errors
    def sync_redis(self) -> SyncClient:
        """The synchronous client (connected and checked like :meth:`aredis`)."""
        if self._sync_redis is None:
            self._sync_redis = connect_sync(self.settings, check=True)
        return self._sync_redis

    @property
    def publisher(self) -> Publisher:
        """The publisher (schemas are loaded on first use)."""
        if self._publisher is None:
            from bus.events.publish import Publisher
            from bus.events.schemas import SchemaRegistry

            if self._schemas is None:
                self._schemas = SchemaRegistry.load(self.settings.schemas_dir)
            self._publisher = Publisher(
                self._schemas,
                prefix=self.prefix,
                source=self._source,
                max_payload_bytes=self.settings.max_payload_bytes,
                dedup_window_s=self.settings.dedup_window_s,
                event_retention_s=self.settings.retention_s,
                crash_after_record=self._crash_after_record,
            )
        return self._publisher

    # -- events ----------------------------------------------------------------

    @maps_redis_errors
    def publish(
        self,
        event_type: str,
        payload: Any,
        *,
        id: str | None = None,
        source: str | None = None,
        correlation_id: str | None = None,
    ) -> str:
        """Publish an event from synchronous code; return its key once durable.

        Args:
            event_type: The event type; ``schemas/<type>.json`` must exist.
            payload: The payload; validated against the schema.
            id: The publisher's own id: the same ``source`` + ``id`` within the
                dedup window is routed once (the first event's key is returned).
            source: Who publishes (default: the Bus's source).
            correlation_id: Carried by the event and its follow-ups.

        Raises:
            bus.events.schemas.SchemaError: Unknown type, invalid, oversized or
                unserialisable payload. Nothing is written.
            bus.errors.RedisUnavailable: Redis cannot be reached or used
                (refused, timed out, login or ACL refused, TLS failed).
        """
        return self.publisher.publish(
            self.sync_redis(),
            event_type,
            payload,
            id=id,
            source=source,
            correlation_id=correlation_id,
        )

    @maps_redis_errors
    async def apublish(
        self,
        event_type: str,
        payload: Any,
        *,
        id: str | None = None,
        source: str | None = None,
        correlation_id: str | None = None,
    ) -> str:
        """Publish an event from async code; see :meth:`publish`."""
        return await self.publisher.apublish(
            await self.aredis(),
            event_type,
            payload,
            id=id,
            source=source,
            correlation_id=correlation_id,
        )

    @maps_redis_errors
    def publish_report(
        self,
        event_type: str,
        payload: Any,
        *,
        id: str | None = None,
        source: str | None = None,
        correlation_id: str | None = None,
    ) -> PublishReport:
        """Like :meth:`publish`, and say whether it was a duplicate and which apps it reached.

        For tools that tell a person what happened (``python -m bus publish``):
        the report comes from the publish itself, not from a second look.

        Returns:
            A :class:`bus.events.publish_results.PublishReport`: the key, ``duplicate`` and
            the ``apps`` routed to now.
        """
        return self.publisher.publish_report(
            self.sync_redis(),
            event_type,
            payload,
            id=id,
            source=source,
            correlation_id=correlation_id,
        )

    @maps_redis_errors
    def publish_many(self, events: Sequence[EventSpec]) -> list[str]:
        """Publish a batch in one pipelined round trip; all validated first."""
        return self.publisher.publish_many(self.sync_redis(), events)

    @maps_redis_errors
    async def apublish_many(self, events: Sequence[EventSpec]) -> list[str]:
        """Async :meth:`publish_many`."""
        return await self.publisher.apublish_many(await self.aredis(), events)

    # -- tasks -------------------------------------------------------------------

    @maps_redis_errors
    async def enqueue(
        self,
        app: App | str,
        name: str,
        payload: Any = None,
        *,
        id: str | None = None,
        queue: str | None = None,
        run_at_ms: int | None = None,
        delay_s: float | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        backoff: Any = None,
        scope: str | None = None,
        kind: str = "task",
    ) -> TaskRef:
        """Enqueue one task by name, durably; a known ``id`` is a no-op.

        Args:
            app: The app whose worker runs the task. Its declared options
                are the defaults: those of an :class:`App`, or for a name,
                those its app.toml declares (stored in the registry by a sync).
            name: The task name.
            payload: A JSON-serialisable payload.
            id: Optional caller-given id, for idempotent enqueue.
            queue: The queue (default: the declaration's, else ``default``).
            run_at_ms: Due time in epoch milliseconds.
            delay_s: Due this many seconds from now.
            max_attempts: Attempts before the task is dead.
            timeout_s: Per-attempt timeout.
            backoff: Back-off spec.
            scope: ``"any"`` (one worker) or ``"all"`` (once on every node).
            kind: ``"task"`` or ``"event"``.

        Returns:
            The task's reference; ``added`` is False if the id was known.

        Raises:
            bus.events.declarations.TaskNotDeclared: ``app`` is a name, the app's
                registered declarations have no task ``name``, and no option
                was given (nothing is written).
            ValueError: An option or name is invalid (nothing is written).
            TypeError: The payload is not JSON-serialisable (nothing is written).
        """
        item = EnqueueItem(
            name=name,
            payload=payload,
            id=id,
            queue=queue,
            run_at_ms=run_at_ms,
            delay_s=delay_s,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            backoff=backoff,
            kind=kind,
            scope=scope,
        )
        return (await self.enqueue_many(app, [item]))[0]

    @maps_redis_errors
    async def enqueue_many(self, app: App | str, items: Sequence[EnqueueItem]) -> list[TaskRef]:
        """Enqueue many tasks of one app in one round trip; all or nothing on bad input.

        Args:
            app: The app whose worker runs the tasks. Its declared options
                are the defaults: those of an :class:`App`, or for a name,
                those its app.toml declares (stored in the registry by a sync).
            items: The tasks; they may go to different queues.

        Returns:
            One reference per item, in the items' order.

        Raises:
            bus.events.declarations.TaskNotDeclared: ``app`` is a name and an item's
                task is not among its registered declarations, with no
                option of its own (nothing is written).
            ValueError: An option or name of any item is invalid (nothing is written).
            TypeError: A payload is not JSON-serialisable (nothing is written).
        """
        client = await self.aredis()
        declarations = None
        if not isinstance(app, App):
            declarations = await self._declarations.aresolve(client, validate_app_name(app), items)
        return await enqueue_items(client, self.prefix, app, items, declarations=declarations)

    @maps_redis_errors
    def enqueue_sync(
        self,
        app: App | str,
        name: str,
        payload: Any = None,
        *,
        id: str | None = None,
        queue: str | None = None,
        run_at_ms: int | None = None,
        delay_s: float | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        backoff: Any = None,
        scope: str | None = None,
        kind: str = "task",
    ) -> TaskRef:
        """Enqueue one task from synchronous code (a Django or Flask view, a script).

        The same arguments, checks and result as :meth:`enqueue`, in one
        blocking round trip on :meth:`sync_redis`; no event loop is needed.

        Args:
            app: The app whose worker runs the task. Its declared options
                are the defaults: those of an :class:`App`, or for a name,
                those its app.toml declares (stored in the registry by a sync).
            name: The task name.
            payload: A JSON-serialisable payload.
            id: Optional caller-given id, for idempotent enqueue.
            queue: The queue (default: the declaration's, else ``default``).
            run_at_ms: Due time in epoch milliseconds.
            delay_s: Due this many seconds from now.
            max_attempts: Attempts before the task is dead.
            timeout_s: Per-attempt timeout.
            backoff: Back-off spec.
            scope: ``"any"`` (one worker) or ``"all"`` (once on every node).
            kind: ``"task"`` or ``"event"``.

        Returns:
            The task's reference; ``added`` is False if the id was known.

        Raises:
            bus.events.declarations.TaskNotDeclared: ``app`` is a name, the app's
                registered declarations have no task ``name``, and no option
                was given (nothing is written).
            ValueError: An option or name is invalid (nothing is written).
            TypeError: The payload is not JSON-serialisable (nothing is written).
        """
        item = EnqueueItem(
            name=name,
            payload=payload,
            id=id,
            queue=queue,
            run_at_ms=run_at_ms,
            delay_s=delay_s,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            backoff=backoff,
            kind=kind,
            scope=scope,
        )
        return self.enqueue_many_sync(app, [item])[0]

    @maps_redis_errors
    def enqueue_many_sync(self, app: App | str, items: Sequence[EnqueueItem]) -> list[TaskRef]:
        """Enqueue many tasks of one app from synchronous code, in one round trip.

        The same checks and result as :meth:`enqueue_many`: every item is
        validated before anything is written.

        Args:
            app: The app whose worker runs the tasks. Its declared options
                are the defaults: those of an :class:`App`, or for a name,
                those its app.toml declares (stored in the registry by a sync).
            items: The tasks; they may go to different queues.

        Returns:
            One reference per item, in the items' order.

        Raises:
            bus.events.declarations.TaskNotDeclared: ``app`` is a name and an item's
                task is not among its registered declarations, with no
                option of its own (nothing is written).
            ValueError: An option or name of any item is invalid (nothing is written).
            TypeError: A payload is not JSON-serialisable (nothing is written).
        """
        client = self.sync_redis()
        declarations: Mapping[str, TaskSpec] | None = None
        if not isinstance(app, App):
            declarations = self._declarations.resolve_sync(client, validate_app_name(app), items)
        return enqueue_items_sync(client, self.prefix, app, items, declarations=declarations)

    @maps_redis_errors
    async def get_task(self, app: str, task_id: str) -> TaskInfo | None:
        """Read a task by id: record, state and errors; None if unknown or expired."""
        keys = app_keys(self.prefix, validate_app_name(app))
        state, record, errors = await reads.task_entry(await self.aredis(), keys, task_id)
        if state is None:
            return None
        return TaskInfo.from_raw(task_id, state, record, errors)

    async def aclose(self) -> None:
        """Close the clients this Bus created (not those it was given)."""
        if self._owns[0] and self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        self.close_sync()

    def close_sync(self) -> None:
        """Close the synchronous client if this Bus created it, and in any case
        the idle connections kept beside its pool for script calls (calls made
        afterwards connect again)."""
        if self._sync_redis is not None:
            own.close(self._sync_redis)
        if self._owns[1] and self._sync_redis is not None:
            self._sync_redis.close()
            self._sync_redis = None
