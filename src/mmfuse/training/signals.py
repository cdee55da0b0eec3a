"""SIGTERM / SIGINT during training: stop at the next safe point, leave a resumable checkpoint.

:func:`catch_stop_signals` (a context manager used by :func:`mmfuse.training.fit`) replaces the handlers
of SIGTERM and SIGINT by one that only records the signal. The training callback
(:class:`mmfuse.training.callbacks.EpochCheckpoints`) checks :func:`requested` after every training batch
and after every epoch's checkpoint, and raises :class:`TrainingInterrupted`; the resumable ``last``
checkpoint of the last finished epoch is already on disk. ``mmfuse train`` turns it into exit code
128 + signal (143 for SIGTERM, 130 for SIGINT) and a one-line message saying how to resume. A second
SIGINT while stopping raises KeyboardInterrupt at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from ..errors import MMFuseError

_received: list[int] = []


class TrainingInterrupted(MMFuseError):
    """Training stopped on a signal; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)


def requested() -> int | None:
    """The first stop signal received inside :func:`catch_stop_signals`, or None."""
    return _received[0] if _received else None


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _handler(signum, frame) -> None:
    if _received and signum == signal.SIGINT:
        raise KeyboardInterrupt  # a second Ctrl-C: stop now
    _received.append(signum)


@contextlib.contextmanager
def catch_stop_signals():
    """Record SIGTERM / SIGINT instead of dying (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in old:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        _received.clear()
