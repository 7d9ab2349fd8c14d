"""Slow model work in a worker thread, its progress relayed to the MCP client, cancellable.

:func:`run_in_worker` runs ``work(progress, cancel)`` in a thread; :class:`ProgressSlot` holds the
thread's latest progress for the event loop to send, so the worker never waits on the client.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context

from store.progress import Progress

T = TypeVar("T")


class ProgressSlot:
    """The latest progress of a worker thread, read by the event loop (the worker never waits on it).

    The builder reports ``(done, total, message)`` per phase (scanning the corpus, then building),
    each phase starting again from 0. MCP wants one value that only grows, so each phase fills
    half of what is left of 100% (the first 0-50, the next 50-75, ...), and the message keeps the
    phase's own count.
    """

    HEARTBEAT_S = 10.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: tuple[float, str] | None = None
        self._base = 0.0
        self._percent = 0.0
        self._last_fraction: float | None = None
        self._sent = -1.0
        self._message = ""

    def set(self, done: float, total: float, message: str) -> None:
        """Record progress (a :data:`store.progress.Progress`); called from the worker."""
        fraction = max(0.0, min(1.0, done / total)) if total else 0.0
        with self._lock:
            if self._last_fraction is not None and fraction < self._last_fraction:
                self._base = self._percent  # a new phase
            self._last_fraction = fraction
            self._percent = self._base + (100.0 - self._base) * 0.5 * fraction
            count = f" ({done:g}/{total:g})" if total and total > 1 else ""
            self._pending = (self._percent, message + count)

    def take(self, heartbeat: bool = False) -> tuple[float, str] | None:
        """The progress to report now, or None; ``heartbeat`` repeats the last message.

        Each value is larger than the last (a repeat goes up by a hundredth of a percent), and
        stays below 100 until the work returns.
        """
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            if not heartbeat or self._sent < 0:
                return None
            pending = (self._sent, self._message)
        percent, message = pending
        percent = round(max(percent, self._sent + 0.01), 2)
        if percent >= 100:
            return None
        self._sent, self._message = percent, message
        return percent, message


async def run_in_worker(ctx: Context, work: Callable[[Progress, threading.Event], T], first: str) -> T:
    """Run slow model work in a worker thread, relaying its progress and stopping it if cancelled.

    ``work(progress, cancel)`` runs in a thread; its progress reaches the client every quarter
    second, and at least every ten seconds while it works (so clients that reset their timeout
    on progress keep waiting). If the call is cancelled, the thread is abandoned and ``cancel``
    is set, which the builder checks between batches.
    """
    slot, cancel = ProgressSlot(), threading.Event()

    async def relay() -> None:
        quiet = 0.0
        while True:
            update = slot.take(heartbeat=quiet >= slot.HEARTBEAT_S)
            if update is not None:
                quiet = 0.0
                await ctx.report_progress(update[0], 100, update[1])
            await anyio.sleep(0.25)
            quiet += 0.25

    slot.set(0, 1, first)
    failure: Exception | None = None
    result: Any = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(relay)
            try:
                result = await anyio.to_thread.run_sync(functools.partial(work, slot.set, cancel),
                                                        abandon_on_cancel=True)
            except Exception as exc:  # re-raised below, unwrapped from the task group's ExceptionGroup
                failure = exc
            finally:
                tg.cancel_scope.cancel()
    finally:
        cancel.set()  # a no-op when the work finished; stops an abandoned build at its next batch
    if failure is not None:
        raise failure
    return result
