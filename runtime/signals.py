"""SIGTERM and SIGHUP end a command the way Ctrl-C does.

Python's default for these signals kills the process at once, so ``finally`` blocks and
context managers never run (an unpacked bundle archive would stay in the temp dir).  The
handler raises :class:`Terminated`, a ``KeyboardInterrupt``, so every cleanup that runs
on Ctrl-C runs on these too; the CLI then exits with 128 + the signal number.  A signal that
was ignored when the process started (``nohup``) stays ignored.

A C extension that calls back into Python while the signal arrives (``numpy.fromfile`` on a
file object, for one) can swallow :class:`Terminated` and raise an unrelated error in its
place, so the handler also records the signal: :func:`received` tells the CLI that the
command was terminated whatever error reached it.
"""

from __future__ import annotations

import signal
import threading
from typing import Optional


class Terminated(KeyboardInterrupt):
    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


_received: Optional[int] = None


def _raise(signum, frame):
    global _received
    _received = signum
    raise Terminated(signum)


def received() -> Optional[Terminated]:
    """The termination signal this process has received, as a :class:`Terminated`, or None."""
    return Terminated(_received) if _received is not None else None


def install() -> None:
    """Route SIGTERM and SIGHUP through :class:`Terminated` (main thread, default handlers only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, _raise)


def restore() -> None:
    """Give SIGINT, SIGTERM and SIGHUP their default action (the process ends with the signal, as
    128 + N to a shell) for the teardown after a command: a signal that arrives while the
    interpreter exits then ends it at once instead of raising inside an exit handler (which
    Python reports as "Exception ignored in atexit callback" and then exits 0, as if nothing had
    happened).  SIGINT's Python handler (``KeyboardInterrupt``) is given back too: Ctrl-C as a
    command finishes is such a signal."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) is _raise:
            signal.signal(sig, signal.SIG_DFL)


def terminated_by(exc: BaseException):
    """The :class:`Terminated` behind *exc* (click wraps it in Abort, C code may mask it), or None."""
    seen = 0
    cur: Optional[BaseException] = exc
    while cur is not None and seen < 10:
        if isinstance(cur, Terminated):
            return cur
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return received()
