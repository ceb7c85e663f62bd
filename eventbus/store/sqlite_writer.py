"""The SQLite writer: one thread, one connection, group commit (many callers' writes share one fsync)."""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from eventbus.errors import EventBusError, UnavailableError

T = TypeVar("T")
log = structlog.get_logger("eventbus.store")

WriteOp = Callable[[sqlite3.Connection], Any]


@dataclass(slots=True)
class _Job:
    op: WriteOp
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


_STOP = object()
_BUSY_WITHIN = 0.05  # seconds: a batch of several that ended this recently means writes are coming concurrently


class SQLiteWriter:
    """Runs write operations in batches: `BEGIN IMMEDIATE`, a savepoint per operation, one `COMMIT`.

    A failing operation rolls back to its savepoint and fails alone; a failing commit fails the whole batch
    (every caller sees `UnavailableError`, none a success).

    Adaptive linger: while writes come concurrently (the last batch had several operations and ended moments
    ago), the thread waits up to `linger` seconds after a batch's first operation so that more callers share
    its commit and fsync; a lone write after a quiet spell commits at once, paying no linger.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        linger: float = 0.005,
        max_batch: int = 512,
        on_batch_failure: Callable[[], None] | None = None,
    ) -> None:
        self._connect = connect
        self._linger = linger
        self._last_batch_size = 0
        self._last_commit_at = 0.0
        self._max_batch = max_batch
        self._on_batch_failure = on_batch_failure
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.commits = 0
        self.operations = 0
        self.last_commit_error: str | None = None  # set while commits fail (disk full, I/O error)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="eventbus-sqlite-writer", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    async def submit(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run `op` in the next batch and return its result once the batch is durably committed."""
        if self._thread is None:
            raise UnavailableError("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(op, future, loop))
        return await future

    def _run(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                first = self._queue.get()
                if first is _STOP:
                    return
                batch: list[_Job] = [first]
                stop = self._fill(batch)
                self._run_batch(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _fill(self, batch: list[_Job]) -> bool:
        now = time.monotonic()
        busy = self._last_batch_size > 1 and now - self._last_commit_at < _BUSY_WITHIN
        deadline = now + (self._linger if busy else 0.0)
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    return False
            if item is _STOP:
                return True
            batch.append(item)
        return False

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        storage_error: str | None = None
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                conn.execute("SAVEPOINT op")
                try:
                    result = job.op(conn)
                except Exception as exc:
                    if isinstance(exc, sqlite3.Error):
                        storage_error = str(exc)  # e.g. disk full: the store is not healthy even if others commit
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    if self._on_batch_failure is not None:
                        self._on_batch_failure()
                    outcomes.append((job, None, exc))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((job, result, None))
            conn.execute("COMMIT")
            self._last_batch_size = len(batch)
            self._last_commit_at = time.monotonic()
            self.commits += 1
            self.operations += len(batch)
            self.last_commit_error = storage_error
        except sqlite3.Error as exc:
            # Disk full, I/O error, lock trouble: nothing of this batch is durable, so no caller hears success.
            # SQLite may roll the whole transaction back by itself on SQLITE_FULL or an I/O error (the next
            # statement then fails with "no such savepoint"): report the storage error that started it.
            reason = storage_error or str(exc)
            log.error("store_commit_failed", error=reason, operations=len(batch))
            self.last_commit_error = reason
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if self._on_batch_failure is not None:
                self._on_batch_failure()
            failure = UnavailableError(f"the store could not commit: {reason}")
            outcomes = [(job, None, failure) for job in batch]
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any, BaseException | None]]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, items)
            except RuntimeError:
                pass  # that caller's loop is closed: nobody is waiting any more


def _resolve(outcomes: list[tuple[_Job, Any, BaseException | None]]) -> None:
    for job, result, error in outcomes:
        if job.future.done():
            continue
        if error is None:
            job.future.set_result(result)
        elif isinstance(error, EventBusError | sqlite3.Error):
            job.future.set_exception(
                error if isinstance(error, EventBusError) else UnavailableError(f"store error: {error}")
            )
        else:
            job.future.set_exception(error)
