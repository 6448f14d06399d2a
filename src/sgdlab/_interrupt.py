"""Stopping runs on SIGINT and SIGTERM between compiled chunks, never inside one.

A run is a sequence of compiled chunks (see :func:`sgdlab.engines._driver.drive`). Inside
:func:`handling` (the command line installs it around every command) SIGINT and SIGTERM
only set a flag; the driver looks at it between chunks, and then either returns the
records computed so far (inside :func:`keep_partial`: ``sgdlab run`` writes them as a
partial trajectory) or raises :class:`Interrupted` (sweeps and reproductions: the run
being computed is dropped, the finished ones are in the store). Nothing is raised inside
a JAX computation or callback.

A signal that arrives while the process is inside a long compiled call (a compilation, an
ODE solve, a chunk longer than expected) is noticed by a watchdog thread woken through
:func:`signal.set_wakeup_fd`: if no checkpoint acknowledges the signal within ``grace``
seconds, it prints one line and ends the process with ``os._exit`` (nothing is being
written then: every file is written to a temporary name and renamed). A second signal ends
the process at once. The ``sgdlab`` command installs the handlers first thing
(:func:`early`), also over an inherited "ignore" (a background job of a shell script). The
exit status is the conventional 128 + signal number (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["GRACE", "Interrupted", "acknowledge", "check", "handling", "keep_partial", "requested", "signal_name"]

GRACE = 4.0  # seconds a checkpoint has to acknowledge a signal before the watchdog ends the process
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt, not caught by ``except Exception``
    """A run stopped by SIGINT or SIGTERM; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, message: str = "stopped") -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def line(self) -> str:
        return f"interrupted by {signal_name(self.signum)}: {self.args[0]}"


class _State:
    signum: int | None = None
    partial: bool = False
    ack = threading.Event()


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def requested() -> int | None:
    """The signal number received inside :func:`handling` (``None``: none)."""
    return _State.signum


def acknowledge() -> None:
    """Tell the watchdog that a checkpoint saw the signal (the process stops by itself)."""
    _State.ack.set()


def check(what: str = "stopped") -> None:
    """Raise :class:`Interrupted` if a signal was received (a checkpoint between chunks)."""
    if _State.signum is not None:
        acknowledge()
        raise Interrupted(_State.signum, what)


def partial_wanted() -> bool:
    return _State.partial


@contextmanager
def keep_partial() -> Iterator[None]:
    """Inside, an interrupted run returns its records so far instead of raising."""
    old, _State.partial = _State.partial, True
    try:
        yield
    finally:
        _State.partial = old


def early() -> None:
    """From the start of the ``sgdlab`` process (``sgdlab/__init__.py``, before the imports of
    JAX) until :func:`handling`: a SIGINT or SIGTERM ends the process at once with its line
    (nothing has been computed yet) instead of raising inside an import, where a
    KeyboardInterrupt aborted the process or was swallowed by a finalizer and lost."""

    def handler(signum, frame) -> None:
        _hard_exit(signum, "stopped before the command started; nothing was written")

    for s in SIGNALS:
        signal.signal(s, handler)


def _hard_exit(signum: int, why: str) -> None:
    os.write(2, f"interrupted by {signal_name(signum)}: {why}\n".encode())
    os._exit(128 + signum)


@contextmanager
def handling(grace: float = GRACE) -> Iterator[None]:
    """Turn SIGINT and SIGTERM into a flag for the duration (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    r, w = os.pipe()
    os.set_blocking(w, False)
    closing = threading.Event()
    _State.signum = None
    _State.ack.clear()

    seen = []

    def handler(signum, frame) -> None:
        if seen:
            _hard_exit(signum, "second signal, stopped at once")
        seen.append(signum)
        _State.signum = signum

    def watchdog() -> None:
        while True:
            data = os.read(r, 1)
            if closing.is_set() or not data:
                return
            signum = data[0]
            if signum not in SIGNALS:
                continue
            if _State.signum is None:
                _State.signum = signum
            if not _State.ack.wait(grace) and not closing.is_set():
                _hard_exit(signum, "stopped inside a compiled call; nothing was written")
            return

    # a signal the process was started with ignored (a background job of a script, nohup)
    # stays ignored, as Python itself leaves an ignored SIGINT alone
    old = {s: signal.signal(s, handler) for s in SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
    old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    thread = threading.Thread(target=watchdog, name="sgdlab-interrupt-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        closing.set()
        _State.ack.set()
        signal.set_wakeup_fd(old_fd)
        for s, h in old.items():
            signal.signal(s, h)
        try:
            os.write(w, b"\0")
        except OSError:
            pass
        thread.join(timeout=1.0)
        os.close(w)
        os.close(r)
