"""What nlperf does on SIGINT, SIGTERM and SIGHUP: stop cleanly, never leave anything behind.

SIGTERM (what `timeout`, CI cancellation and systemd send) and SIGHUP (a closed terminal) take
the same path as Ctrl-C: they raise ``Terminated``, a KeyboardInterrupt, so every clean-up
that handles Ctrl-C (kill the VM's group, detach probes, unload the module, status
``interrupted``) handles them too. The exit status says which signal it was: 130 for SIGINT,
128 + N for the others, as shells report them.

A process started with SIGINT *ignored* (a background job of a non-interactive shell, nohup)
keeps ignoring it on purpose: whoever started it asked that a terminal's Ctrl-C not reach it.
SIGTERM still stops it.

Only the first of these signals counts: from then on all three are ignored, so a second Ctrl-C
cannot cut the clean-up short (processes started during clean-up, rmmod, inherit the ignore).
"""

from __future__ import annotations

import signal
from types import FrameType

from nlperf.errors import EXIT_INTERRUPTED


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM or SIGHUP."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_received: list[int] = []


def _raise(signum: int, _frame: FrameType | None) -> None:
    # Once: a second signal of any of these during clean-up (a Ctrl-C pressed again, SIGTERM
    # after Ctrl-C) must not abort the clean-up half-way, leaving the module loaded or worker
    # processes unkilled. The clean-up is bounded; SIGKILL still ends it.
    for other in STOPPING:
        if signal.getsignal(other) is _raise:
            signal.signal(other, signal.SIG_IGN)
    _received.append(signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def install() -> None:
    for signum in STOPPING:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise)


def exit_status(e: KeyboardInterrupt | None = None) -> int:
    """The exit status of an interrupted run: 128 + the signal that stopped it, 130 for Ctrl-C.

    Without the exception at hand (a run that caught it to record its status), the first
    terminating signal this process received decides.
    """
    if isinstance(e, Terminated):
        return 128 + e.signum
    return 128 + _received[0] if _received and e is None else EXIT_INTERRUPTED
