"""Stopping like a service: SIGTERM cancels a running command the way Ctrl-C does.

cron, systemd, Docker and CI stop a job with SIGTERM, whose default action kills the process
without a word. Under :func:`sigterm_cancels`, the first SIGTERM cancels the task that
:func:`run` is running (the engine unwinds exactly as for Ctrl-C: in-flight requests are
cancelled, a commit in progress finishes, nothing partial is written) and :class:`Terminated` is
raised once it has stopped. Outside a running loop, or on a second SIGTERM, ``Terminated`` is
raised at once, like a second Ctrl-C. This mirrors what :class:`asyncio.Runner` does for SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")


class Terminated(BaseException):
    """SIGTERM arrived. A ``BaseException``, like ``KeyboardInterrupt``, so no handler for
    ordinary errors swallows it on the way out."""


class _Target:
    """The task a SIGTERM should cancel, and whether one did."""

    task: asyncio.Task[Any] | None = None
    terminated = False


_target = _Target()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    task = _target.task
    if task is not None and not task.done() and not _target.terminated:
        _target.terminated = True
        task.cancel()
        # wake the loop if it is blocked in select() with a long timeout
        task.get_loop().call_soon_threadsafe(lambda: None)
        return
    raise Terminated


@contextmanager
def sigterm_cancels() -> Iterator[None]:
    """Handle SIGTERM as described above while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    _target.terminated = False
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """:func:`asyncio.run` whose task a SIGTERM cancels; then raises :class:`Terminated`."""

    async def tracked() -> T:
        _target.task = asyncio.current_task()
        try:
            return await coro
        finally:
            _target.task = None

    try:
        result = asyncio.run(tracked())
    except asyncio.CancelledError:
        if _target.terminated:
            raise Terminated from None
        raise
    if _target.terminated:  # the coroutine absorbed the cancellation: still a termination
        raise Terminated
    return result
