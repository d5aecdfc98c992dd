"""SIGINT and SIGTERM during a run: stop with a clear, non-zero ending instead of a traceback
(or, as Lightning alone would have it, a "graceful" stop that reports success)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class RunInterrupted(BaseException):
    """Raised in the main thread when SIGINT or SIGTERM arrives during a run.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it; not a
    KeyboardInterrupt, which Lightning would catch and turn into a normal end of training.
    """

    def __init__(self, signum: int):
        self.signum = signum
        self.where = ""
        """Where the run stopped and how to go on, added by the run that was interrupted."""
        super().__init__(signum)

    def __str__(self) -> str:
        return f"interrupted by {signal.Signals(self.signum).name}{self.where}"

    @property
    def exit_status(self) -> int:
        """The shell's convention for a process ended by a signal."""
        return 128 + self.signum


@contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`RunInterrupted` for the duration of the block.

    Lightning composes its own SIGTERM handler with the one installed here, so the exception
    reaches the run wherever it is. Signal handlers can only be set from the main thread; in
    another thread the block runs with the process's handlers unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise RunInterrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
