"""The module under abuse (in the lab VM): malformed floods, unload under load, load cycles.

`make test` runs reduced counts; `make soak` sets NLPERF_SOAK=1 for the full ones (≥ 100 000
malformed datagrams per processing model and sender, 20 unloads under load per model, 100
load/unload cycles).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nlperf import kmod, wire
from nlperf.nlsock import Control, open_socket
from tests.vm.conftest import PROTO, Loaded, client, recv_msgs, track, unloads_within

MODES = ["callback", "kthread", "workqueue"]
SOAK = bool(os.environ.get("NLPERF_SOAK"))
FUZZ_COUNT = 100_000 if SOAK else 10_000
UNLOADS_UNDER_LOAD = 20 if SOAK else 2
LOAD_CYCLES = 100 if SOAK else 10
FUZZER = Path(__file__).with_name("fuzz_datagrams.py")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]

# No stats reset among the fuzzed types: a privileged one would start a new counting period
# in the middle of the flood, and the error counts checked afterwards would cover only its tail.
# Resets with messages queued have tests of their own (test_module.py).
WIRE = json.dumps({
    "proto": PROTO,
    "types": {"echo": wire.MSG_ECHO, "timed_echo": wire.MSG_TIMED_ECHO, "sink": wire.MSG_SINK,
              "relay": wire.MSG_RELAY, "gen_start": wire.MSG_GEN_START,
              "gen_stop": wire.MSG_GEN_STOP, "stats_get": wire.MSG_STATS_GET,
              "mcast_data": wire.MSG_MCAST_DATA},
    "avoid_types": [wire.MSG_STATS_RESET],
    "gen_fmt": wire.GEN_REQ.format, "relay_fmt": wire.RELAY_REQ.format,
    "stamp_size": wire.STAMP.size,
})


def _fuzz(count: int, seed: int, *, unprivileged: bool) -> dict[str, int]:
    # the script's text on -c: an unprivileged user may not read the checkout or pytest's tmp
    argv = [sys.executable, "-c", FUZZER.read_text(), WIRE, str(count), str(seed)]
    if unprivileged:
        argv = [*NOBODY, *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=1800, cwd="/")
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def _settled(ctl: Control, timeout: float = 30.0) -> dict[str, int]:
    """Stats once the deferred queue is empty and no generator runs (every skb given back)."""
    ctl.gen_stop()
    deadline = time.monotonic() + timeout
    while True:
        st = ctl.stats().fields
        if st["skbs_held"] == 0 and not st["gen_pid"]:
            return st
        assert time.monotonic() < deadline, f"module never settled: {st}"
        time.sleep(0.05)


def _still_echoes() -> None:
    s = client()
    s.send(wire.nlmsg(wire.MSG_ECHO, b"alive", seq=77))
    (mtype, _, seq, payload), = recv_msgs(s, 1)
    assert (mtype, seq, payload) == (wire.MSG_ECHO, 77, b"alive")
    s.close()


@pytest.mark.parametrize("unprivileged", [False, True], ids=["root", "nobody"])
@pytest.mark.parametrize("mode", MODES)
def test_malformed_flood_leaves_the_module_sound(module: Loaded, mode: str,
                                                 unprivileged: bool) -> None:
    if unprivileged and shutil.which("setpriv") is None:
        pytest.fail("setpriv missing in the lab VM")
    # allow_unpriv=1: the unprivileged flood reaches every parser, not only the refusal
    module(mode=mode, queue_len=256, allow_unpriv=1)
    with Control(PROTO) as ctl:
        track(ctl.sock)
        ctl.reset_stats()
        counts = _fuzz(FUZZ_COUNT, seed=2 * MODES.index(mode) + unprivileged,
                       unprivileged=unprivileged)
        assert counts.get("sent", 0) + sum(v for k, v in counts.items()
                                           if k.startswith("send_")) == FUZZ_COUNT
        st = _settled(ctl)
        _still_echoes()
    assert st["skbs_held"] == 0
    assert st["processed"] <= st["received"]
    assert st["err_truncated"] > 0 and st["err_notsupp"] > 0 and st["err_inval"] > 0


def test_unprivileged_flood_is_refused_without_allow_unpriv(module: Loaded) -> None:
    module(mode="kthread", queue_len=64)
    with Control(PROTO) as ctl:
        track(ctl.sock)
        ctl.reset_stats()
        _fuzz(FUZZ_COUNT // 10, seed=5, unprivileged=True)
        st = _settled(ctl)
        _still_echoes()
    assert st["skbs_held"] == 0 and st["processed"] <= st["received"]


@pytest.mark.parametrize("mode", MODES)
def test_unload_under_load_repeatedly(ko: Path, mode: str) -> None:
    """A full queue of slow work and a running generator, then rmmod: clean and prompt."""
    for _ in range(UNLOADS_UNDER_LOAD):
        kmod.unload()
        kmod.load(ko, kmod.validate_params({"mode": mode, "queue_len": 64,
                                            "work_sleep_us": 2000}))
        listener = open_socket(PROTO, groups=(1,), rcvbuf=4096)
        s = open_socket(PROTO)
        with Control(PROTO) as ctl:
            ctl.gen_start([1], 64, duration_ns=60_000_000_000)
            for i in range(100 if mode == "callback" else 200):
                s.send(wire.nlmsg(wire.MSG_SINK if mode == "callback" else wire.MSG_ECHO,
                                  b"x" * 64, seq=i))
            assert ctl.stats().fields["gen_pid"] > 0
        s.close()
        listener.close()
        unloads_within(5.0)


def test_load_unload_cycles(ko: Path) -> None:
    kmod.unload()
    for i in range(LOAD_CYCLES):
        kmod.load(ko, kmod.validate_params({"mode": MODES[i % 3]}))
        kmod.unload(timeout=5)
        assert not kmod.is_loaded()


def test_rmmod_with_a_socket_open_is_refused_cleanly(module: Loaded) -> None:
    module(mode="kthread")
    s = client()
    proc = subprocess.run(["rmmod", kmod.MODULE], capture_output=True, text=True)
    assert proc.returncode != 0 and "in use" in proc.stderr
    assert kmod.is_loaded()
    s.send(wire.nlmsg(wire.MSG_ECHO, b"still here", seq=1))
    assert recv_msgs(s, 1)[0][3] == b"still here"
    s.close()
    kmod.unload(timeout=5)
    assert not kmod.is_loaded()

