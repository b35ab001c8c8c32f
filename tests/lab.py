"""When an end-to-end test may skip: only where no lab VM can exist, and never in CI.

A test that skipped on *any* error turned a capability bug into a green suite. Here the only
accepted reason is the lab VM's pieces being absent (no qemu, virtme-ng or lab kernel: what
`make setup` installs); anything else is a failure. Under CI (the CI environment variable, as
`.ci/run` and every CI service set it) nothing skips: a missing piece fails the test.
"""

from __future__ import annotations

import os
import signal

import pytest

from nlperf import capabilities
from nlperf.errors import RunFailed


def lab_vm_missing() -> str | None:
    """Why no lab VM can run here, if the reason is one of the expected ones; else None."""
    try:
        capabilities.pick_target("vm")
    except RunFailed as e:
        if any(f"{piece}: " in str(e) for piece in capabilities.VM_NEEDS):
            return str(e)
        raise
    return None


def require_lab_vm() -> None:
    """Skip the calling test when the lab VM's pieces are absent, except in CI."""
    why = lab_vm_missing()
    if why is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the end-to-end tests, but: {why}")
    pytest.skip(f"no lab VM here ({why}); `make setup` installs it")


def sigint_restored() -> None:
    """preexec_fn for a child that a test stops with SIGINT, as Ctrl-C would.

    A job started with `&` from a non-interactive shell (`make test &`, some CI runners)
    inherits SIGINT ignored, and so would the child; nlperf keeps an inherited SIG_IGN on
    purpose (nlperf/signals.py). A terminal's Ctrl-C reaches a process whose SIGINT is default.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
