"""Messages for people and log files: the ``galaxytune`` logger, printed as plain lines on stdout.

The command line calls :func:`console_logging` first thing; library use (``galaxytune.train``,
``evaluate``, ``prepare`` ...) gets the same lines through :func:`ensure_console_logging` unless the
application's own logging setup shows them (then the lines go wherever it sends them). A warning
that must stay off stdout, where a command writes its output, is logged with ``extra=STDERR``.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("galaxytune")


STDERR = {"stderr": True}
"""``extra=`` for a record that goes to stderr, not stdout: ``log.warning(..., extra=STDERR)``."""


class _Console(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is when a line is emitted (a redirected file, a test's
    capture), or ``sys.stderr`` for a record logged with ``extra=STDERR``, flushing after each line
    so that a log file shows it at once."""

    _to_stderr = False

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr if self._to_stderr else sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        self._to_stderr = bool(getattr(record, "stderr", False))  # handle() holds the handler's lock
        super().emit(record)


def console_logging(level: int = logging.INFO) -> None:
    """Print the ``galaxytune`` logger's messages on stdout as bare lines (no level or time
    prefix), like the rest of the program's output. Calling it again changes nothing."""
    if not any(isinstance(h, _Console) for h in logger.handlers):
        handler = _Console()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def ensure_console_logging() -> None:
    """:func:`console_logging`, unless the ``galaxytune`` logger already has somewhere to go, or the
    application's own setup shows its INFO lines (a root handler, and INFO enabled for
    ``galaxytune``): an application's logging wins. A setup that would hide them (the root logger's
    default level, WARNING) gets the console lines, as printed output always did."""
    if logger.handlers or (logging.getLogger().handlers and logger.isEnabledFor(logging.INFO)):
        return
    console_logging()


def interactive() -> bool:
    """Whether stdout is a terminal, or a Jupyter notebook (whose cells draw progress bars):
    where a progress bar reads well. A file or a pipe gets plain lines instead."""
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty()) or _in_notebook()


def _in_notebook() -> bool:
    # A running kernel, not merely an imported ipykernel module (a test or a tool may import it).
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def duration(seconds: float) -> str:
    """``7.3 s``, ``4 min 05 s``, ``2 h 03 min``."""
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
