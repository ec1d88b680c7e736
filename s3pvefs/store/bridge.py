"""trio <-> asyncio bridge: one thread runs an asyncio loop, trio tasks submit coroutines to it.

aiobotocore needs asyncio; the filesystem runs on trio. Instead of a second event-loop layer
(trio-asyncio) a dedicated thread owns an asyncio loop. A trio task hands a coroutine over with
``loop.call_soon_threadsafe``, sleeps in ``wait_task_rescheduled`` and is woken through its trio
token when the asyncio task is done. Cancelling the trio task cancels the asyncio task and waits
for it to finish, so no request outlives its caller.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")


class LoopStoppedError(RuntimeError):
    """The asyncio loop was stopped while a call was still running in it."""


class _Call:
    """State shared by the trio side and the loop side of one ``AsyncioThread.run`` call."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.asyncio_task: asyncio.Task[Any] | None = None
        # Set (under the lock) once trio asked to cancel; from then on the call ends in it.
        self.raise_cancel: Callable[[], Any] | None = None


class AsyncioThread:
    """A thread running one asyncio event loop, with a trio-facing ``run``."""

    def __init__(self, name: str = "s3pvefs-asyncio") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._state_lock = threading.Lock()
        self._stopping = False

    # -- lifecycle (synchronous, from any thread except the loop's) --------------------------

    def start(self) -> None:
        """Start the thread and return once its loop is running."""
        with self._state_lock:
            if self._thread is not None:
                raise RuntimeError("AsyncioThread can only be started once")
            self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread.start()
        self._started.wait()

    def stop(self) -> None:
        """Stop the loop (cancelling whatever still runs in it) and join the thread. Idempotent."""
        with self._state_lock:
            thread, loop = self._thread, self._loop
            if thread is None or self._stopping:
                already_stopping = True
            else:
                already_stopping = False
                self._stopping = True
        if thread is None:
            return
        if threading.current_thread() is thread:
            raise RuntimeError("AsyncioThread.stop() called from its own loop")
        if not already_stopping and loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        thread.join()

    @property
    def running(self) -> bool:
        return self._loop is not None and not self._stopping

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        loop.call_soon(self._started.set)
        try:
            loop.run_forever()
        finally:
            self._finish_leftover_tasks(loop)
            loop.close()

    @staticmethod
    def _finish_leftover_tasks(loop: asyncio.AbstractEventLoop) -> None:
        # Cancelled tasks wake their trio callers (with LoopStoppedError) from done callbacks.
        leftover = asyncio.all_tasks(loop)
        for task in leftover:
            task.cancel()
        if leftover:
            loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._stopping:
            raise LoopStoppedError("the asyncio loop thread is not running")
        return self._loop

    # -- calls -----------------------------------------------------------------------------

    async def run(self, async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``async_fn(*args)`` as an asyncio task in the loop thread; call from trio."""
        loop = self._require_loop()
        trio_task = trio.lowlevel.current_task()
        token = trio.lowlevel.current_trio_token()
        call = _Call()

        def wake(result: outcome.Outcome[Any]) -> None:
            try:
                token.run_sync_soon(trio.lowlevel.reschedule, trio_task, result)
            except trio.RunFinishedError:
                pass  # nobody left to wake

        def wake_cancelled() -> None:
            # Build the Cancelled exception in the trio thread, where it will be raised.
            raise_cancel = call.raise_cancel
            assert raise_cancel is not None
            try:
                token.run_sync_soon(
                    lambda: trio.lowlevel.reschedule(trio_task, outcome.capture(raise_cancel))
                )
            except trio.RunFinishedError:
                pass

        def on_done(task: asyncio.Task[Any]) -> None:
            with call.lock:
                cancelled_by_trio = call.raise_cancel is not None
            if cancelled_by_trio:
                wake_cancelled()
            else:
                wake(_task_outcome(task))

        def start_in_loop() -> None:
            with call.lock:
                cancelled_early = call.raise_cancel is not None
                if not cancelled_early:
                    # Wrapped so that even a failing async_fn() call happens inside the task.
                    call.asyncio_task = loop.create_task(_as_coroutine(async_fn, *args))
                    call.asyncio_task.add_done_callback(on_done)
            if cancelled_early:
                wake_cancelled()  # trio cancelled before the task existed: nothing to wait for

        def abort(raise_cancel: Callable[[], Any]) -> trio.lowlevel.Abort:
            with call.lock:
                call.raise_cancel = raise_cancel
                task = call.asyncio_task
            if task is not None:
                try:
                    loop.call_soon_threadsafe(task.cancel)
                except RuntimeError:
                    pass  # loop closed: the task was cancelled by the shutdown already
            # else start_in_loop sees raise_cancel and wakes us without starting anything.
            return trio.lowlevel.Abort.FAILED

        try:
            loop.call_soon_threadsafe(start_in_loop)
        except RuntimeError as exc:  # loop closed between the check and now
            raise LoopStoppedError("the asyncio loop thread is not running") from exc
        return await trio.lowlevel.wait_task_rescheduled(abort)  # type: ignore[no-any-return]

    def run_sync_in_loop(self, async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``async_fn(*args)`` in the loop and block until done; call from a non-trio thread."""
        loop = self._require_loop()
        if threading.current_thread() is self._thread:
            raise RuntimeError("run_sync_in_loop() would deadlock in the loop thread")
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(async_fn, *args), loop)
        return future.result()


async def _as_coroutine(async_fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    return await async_fn(*args)


def _task_outcome(task: asyncio.Task[Any]) -> outcome.Outcome[Any]:
    if task.cancelled():
        # Only the loop shutting down cancels a task trio did not ask to cancel.
        return outcome.Error(LoopStoppedError("the asyncio loop stopped during the call"))
    exc = task.exception()
    if exc is not None:
        return outcome.Error(exc)
    return outcome.Value(task.result())
