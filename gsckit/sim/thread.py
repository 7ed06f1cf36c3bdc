"""A :class:`~gsckit.sim.Simulator` on an event loop of its own, in a daemon thread.

For callers that block while the simulator must answer: a CLI subprocess, a plain
``gsckit.backfill`` call, a test or a campaign that inspects the simulator between runs. Its
state is only touched on its own loop, through :meth:`SimulatorThread.do`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .config import SimConfig
from .server import Simulator

T = TypeVar("T")


class SimulatorThread:
    """Start a :class:`Simulator` for ``config`` in a daemon thread; ``base_url`` is where it
    listens, ``sim`` the simulator itself (use it through :meth:`do`). Close it when done (or
    use it as a context manager)."""

    def __init__(self, config: SimConfig, *, timeout_s: float = 120.0) -> None:
        self.timeout_s = timeout_s
        self.loop = asyncio.new_event_loop()
        self.sim = Simulator(config)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="gsckit-sim")
        self._thread.start()
        self.call(self.sim.start())
        self.base_url = self.sim.base_url

    def __enter__(self) -> SimulatorThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the simulator's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(self.timeout_s)

    def do(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the simulator's loop (its state is only touched
        there) and return its result."""
        async def run() -> T:
            return fn(*args, **kwargs)

        return self.call(run())

    def stats(self) -> dict[str, Any]:
        """:meth:`Simulator.stats`, read on its loop."""
        return self.do(self.sim.stats)

    def close(self) -> None:
        """Stop the server, then the loop and its thread."""
        self.call(self.sim.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
