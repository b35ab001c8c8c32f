"""The companion module, exercised from user space in each processing model (in the lab VM)."""

from __future__ import annotations

import errno
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nlperf import kmod, wire
from nlperf.errors import RunFailed
from nlperf.nlsock import Control, open_socket
from tests.vm.conftest import PROTO, Loaded, client, error_of, recv_msgs, track, unloads_within

MODES = ["callback", "kthread", "workqueue"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", MODES)
def test_echo_raw_and_timed_several_per_datagram(module: Loaded, mode: str) -> None:
    module(mode=mode)
    s = client()
    payloads = [b"hello", b"x" * 1000, b""]
    dgram = b"".join(wire.nlmsg(wire.MSG_ECHO, p, seq=i) for i, p in enumerate(payloads))
    t_send = time.monotonic_ns()
    dgram += wire.nlmsg(wire.MSG_TIMED_ECHO, wire.stamp(42, t_send) + b"pad!", seq=3)
    s.send(dgram)
    replies = sorted(recv_msgs(s, 4), key=lambda r: r[2])
    for (mtype, _, seq, payload), sent in zip(replies[:3], payloads, strict=True):
        assert (mtype, payload) == (wire.MSG_ECHO, sent), seq
    mtype, _, seq, payload = replies[3]
    assert (mtype, seq) == (wire.MSG_TIMED_ECHO, 3)
    st = wire.Stamp.unpack_from(payload)
    assert (st.seq, st.user_send_ns) == (42, t_send)
    assert t_send <= st.kern_recv_ns <= st.proc_start_ns <= st.kern_send_ns <= time.monotonic_ns()
    assert payload[wire.STAMP.size:] == b"pad!"
    s.close()


@pytest.fixture(scope="module")
def c_echo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("c") / "nlperf_echo"
    subprocess.run(["cc", "-O2", "-Wall", "-o", str(out),
                    str(ROOT / "kmod/tools/nlperf_echo.c")], check=True)
    return out


@pytest.mark.parametrize("mode", MODES)
def test_article_style_c_client_gets_its_string_back(module: Loaded, mode: str,
                                                     c_echo: Path) -> None:
    module(mode=mode)
    proc = subprocess.run([str(c_echo), "netlink says hi"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "netlink says hi" in proc.stdout


def _queue_delays(n: int) -> list[int]:
    s = client()
    delays = []
    for i in range(n):
        s.send(wire.nlmsg(wire.MSG_TIMED_ECHO, wire.stamp(i, time.monotonic_ns()), seq=i))
        (_, _, _, payload), = recv_msgs(s, 1)
        st = wire.Stamp.unpack_from(payload)
        delays.append(st.proc_start_ns - st.kern_recv_ns)
    s.close()
    return sorted(delays)


def test_deferred_models_show_a_queue_delay(module: Loaded) -> None:
    medians = {}
    for mode in MODES:
        module(mode=mode)
        medians[mode] = _queue_delays(200)[100]
    assert medians["kthread"] > 2 * medians["callback"], medians
    assert medians["workqueue"] > 2 * medians["callback"], medians


@pytest.mark.parametrize("mode", MODES)
def test_stats_equal_what_the_client_counted(module: Loaded, mode: str) -> None:
    module(mode=mode)
    with Control(PROTO) as ctl:
        track(ctl.sock)
        ctl.reset_stats()
        s = client()
        n = 150
        for i in range(n):
            s.send(wire.nlmsg(wire.MSG_ECHO, b"abc", seq=i))
        assert len(recv_msgs(s, n)) == n
        s.send(wire.nlmsg(wire.MSG_SINK, b"zzz"))
        s.close()
        requests = 0
        deadline = time.monotonic() + 30
        while True:  # until the deferred models have processed the sink
            st = ctl.stats().fields
            requests += 1
            if st["processed"] == n + 1 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
    # the workload alone: n echoes and one sink (#13.7); control traffic is counted apart
    assert st["received"] == n + 1
    assert st["processed"] == n + 1
    assert st["replied"] == n
    # the stats requests, this one included; the reset's ack and the earlier stats replies
    assert st["control_received"] == requests
    assert st["control_replied"] == 1 + (requests - 1)
    assert st["control_errors"] == 0
    assert st["mode"] == mode
    assert st["skbs_held"] == 0
    if mode == "kthread":
        pid = int(st["kthread_pid"])
        assert pid > 0 and "nlperf" in Path(f"/proc/{pid}/comm").read_text()
    if mode == "workqueue":
        assert st["wq_name"] == "nlperf_wq"


@pytest.mark.parametrize("mode", ["kthread", "workqueue"])
def test_a_reset_with_messages_queued_counts_none_of_them(module: Loaded, mode: str) -> None:
    """A reset served while messages are queued: they belong to the period before it (#13.7)."""
    module(mode=mode, work_sleep_us=5000)
    with Control(PROTO) as ctl:
        track(ctl.sock)
        s = client()
        for i in range(20):
            s.send(wire.nlmsg(wire.MSG_ECHO, b"before", seq=i))
        ctl.request(wire.MSG_STATS_RESET, ack=True)  # raw: without reset_stats()'s drain
        st = ctl.wait_idle().fields
        assert len(recv_msgs(s, 20)) == 20
    assert (st["received"], st["processed"], st["replied"]) == (0, 0, 0)


def test_reset_stats_drains_the_queue_first(module: Loaded) -> None:
    module(mode="kthread", work_sleep_us=5000)
    with Control(PROTO) as ctl:
        track(ctl.sock)
        s = client()
        for i in range(40):
            s.send(wire.nlmsg(wire.MSG_SINK, b"", seq=i))
        ctl.reset_stats()
        st = ctl.stats().fields
        assert (st["queue_depth"], st["skbs_held"]) == (0, 0)
        assert (st["received"], st["processed"]) == (0, 0)
        for i in range(40):  # 40 × 5 ms of sleeping work cannot drain in 50 ms
            s.send(wire.nlmsg(wire.MSG_SINK, b"", seq=i))
        with pytest.raises(RunFailed, match="did not drain"):
            ctl.reset_stats(drain_timeout=0.05)


@pytest.mark.parametrize("mode", MODES)
def test_malformed_datagrams_get_error_replies(module: Loaded, mode: str) -> None:
    module(mode=mode)
    s = client()
    with Control(PROTO) as ctl:
        track(ctl.sock)
        ctl.reset_stats()
        # intact header, inconsistent payload: a timed echo too short for its stamp
        s.send(wire.nlmsg(wire.MSG_TIMED_ECHO, b"short", seq=1))
        # unknown type
        s.send(wire.nlmsg(0x7F, b"", seq=2))
        # a good sink asking for an ack
        s.send(wire.nlmsg(wire.MSG_SINK, b"", flags=wire.NLM_F_REQUEST | wire.NLM_F_ACK, seq=3))
        got = {seq: (mtype, p) for mtype, _, seq, p in recv_msgs(s, 3)}
        assert got[1][0] == wire.NLMSG_ERROR and error_of(got[1][1]) == errno.EINVAL
        assert got[2][0] == wire.NLMSG_ERROR and error_of(got[2][1]) == errno.EOPNOTSUPP
        assert got[3][0] == wire.NLMSG_ERROR and error_of(got[3][1]) == 0
        # a length beyond the datagram, and a datagram shorter than a header: both end
        # processing of their datagram without a reply, and are counted
        bad = bytearray(wire.nlmsg(wire.MSG_ECHO, b"abcd", seq=4))
        bad[0:4] = (400).to_bytes(4, sys.byteorder)
        s.send(bytes(bad))
        s.send(b"\x01\x02\x03")
        # the socket still works afterwards
        s.send(wire.nlmsg(wire.MSG_ECHO, b"alive", seq=5))
        (mtype, _, seq, payload), = recv_msgs(s, 1)
        assert (mtype, seq, payload) == (wire.MSG_ECHO, 5, b"alive")
        st = ctl.wait_idle().fields
    assert st["err_inval"] == 1 and st["err_notsupp"] == 1
    assert st["err_truncated"] == 2
    assert st["skbs_held"] == 0
    s.close()


@pytest.mark.parametrize("mode", MODES)
def test_relay_and_generator_reach_receivers_on_two_groups(module: Loaded, mode: str) -> None:
    module(mode=mode)
    recv = {g: [track(open_socket(PROTO, groups=(g,), rcvbuf=1 << 22)) for _ in range(2)]
            for g in (1, 2)}
    with Control(PROTO) as ctl:
        track(ctl.sock)
        ctl.reset_stats()
        s = client()
        for i in range(20):
            s.send(wire.nlmsg(wire.MSG_RELAY, wire.relay_payload(0b11, i, time.monotonic_ns()),
                              seq=i))
        ctl.wait_idle()  # the relays out before the generator starts (control is not queued)
        ctl.gen_start([1, 2], 64, count=30)
        deadline = time.monotonic() + 30
        while ctl.stats().fields["gen_pid"] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        st = ctl.stats()
    for g, socks in recv.items():
        assert st.groups[g]["relay_sent"] == 20
        assert st.groups[g]["gen_sent"] == 31  # 30 and the end marker
        for sock in socks:
            msgs = recv_msgs(sock, 51)
            stamps = [wire.Stamp.unpack_from(p) for t, _, _, p in msgs if t == wire.MSG_MCAST_DATA]
            assert len(stamps) == 51
            assert all(x.group == g for x in stamps)
            assert [x.seq for x in stamps[:20]] == list(range(20))  # relay keeps sender seq
            assert [x.seq for x in stamps[20:]] == list(range(31))  # generator: per group
            assert stamps[-1].flags & wire.STAMP_F_END
            sock.close()
    s.close()


def test_generator_rejects_bad_requests(module: Loaded) -> None:
    module(mode="callback")
    with Control(PROTO) as ctl:
        track(ctl.sock)
        for req in (wire.gen_request(0, 64, count=1),          # no group
                    wire.gen_request(1, 8, count=1),           # smaller than a stamp
                    wire.gen_request(1, 64),                   # neither count nor duration
                    wire.GEN_REQ.pack(1, 64, 1, 0, 0, 7)):     # a raw allocation mode
            with pytest.raises(Exception, match="EINVAL"):
                ctl.request(wire.MSG_GEN_START, req, ack=True)


@pytest.mark.parametrize("mode", ["kthread", "workqueue"])
def test_unload_right_after_last_socket_closes_under_load(module: Loaded, mode: str) -> None:
    """Full queue of slow work and a running generator: rmmod must be clean and immediate."""
    module(mode=mode, queue_len=64, work_sleep_us=2000)
    listener = track(open_socket(PROTO, groups=(1,), rcvbuf=4096))
    s = client()
    with Control(PROTO) as ctl:
        track(ctl.sock)
        ctl.gen_start([1], 64, duration_ns=60_000_000_000)
        for i in range(200):  # far beyond queue_len: overflow replies
            s.send(wire.nlmsg(wire.MSG_ECHO, b"x" * 64, seq=i))
        st = ctl.stats().fields
        assert st["queue_overflows"] > 0
        assert st["gen_pid"] > 0
        assert st["skbs_held"] > 0
    s.close()
    listener.close()
    unloads_within(5.0)


def test_unprivileged_sender_is_refused_by_default(module: Loaded) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv missing")
    code = (
        "import socket, struct\n"
        f"s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, {PROTO}); s.bind((0, 0))\n"
        "s.settimeout(5)\n"
        "s.send(struct.pack('=IHHII', 20, 0x10, 1, 9, 0) + b'abcd')\n"
        "d = s.recv(4096)\n"
        "t = struct.unpack_from('=H', d, 4)[0]\n"
        "print('ERR', -struct.unpack_from('=i', d, 16)[0] if t == 2 else 'ECHO')\n")
    # nobody, no groups, no capabilities: a plain user process
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
            "--inh-caps=-all", sys.executable, "-c", code]
    module(mode="callback")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd="/")
    assert out.stdout.strip() == f"ERR {errno.EPERM}", out.stderr
    module(mode="callback", allow_unpriv=1)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd="/")
    assert out.stdout.strip() == "ERR ECHO", out.stderr


def test_load_refuses_bad_parameters(ko: Path) -> None:
    kmod.unload()
    with pytest.raises(Exception, match="queue_len"):
        kmod.validate_params({"queue_len": 0})
    # the module's own validation, past the CLI's: insmod fails and nothing stays loaded
    with pytest.raises(Exception, match="loading the module failed"):
        kmod.load(ko, {"mode": "bogus"})
    assert not kmod.is_loaded()


# --- who may do what (#13) ---------------------------------------------------------------------

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]


# An unprivileged flood: once a line arrives on stdin, the datagram (hex) as fast as it goes
# until stdin closes; prints how many it sent. Standard library only (nobody cannot import
# the checkout).
FLOOD = """
import json, select, socket, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, int(sys.argv[1]))
s.bind((0, 0))
s.setblocking(False)
msg, sent = bytes.fromhex(sys.argv[2]), 0
sys.stdin.readline()
while True:
    s.send(msg)
    sent += 1
    if sent == 1:
        print("flooding", flush=True)
    if sent % 32 == 0:
        while True:
            try:
                s.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError:
                pass
        if select.select([sys.stdin], [], [], 0)[0]:
            break
print(json.dumps({"sent": sent}), flush=True)
"""


def _nobody(code: str, *args: object) -> list[str]:
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv missing in the lab VM")
    return [*NOBODY, sys.executable, "-c", code, *map(str, args)]


@pytest.mark.parametrize("mode", ["kthread", "workqueue"])
def test_unprivileged_flood_leaves_a_root_echo_unaffected(module: Loaded, mode: str) -> None:
    """allow_unpriv=0: refused in input(), before any queueing or work (#13.1)."""
    module(mode=mode, work_sleep_us=2000, queue_len=64)
    flood = subprocess.Popen(
        _nobody(FLOOD, PROTO, wire.nlmsg(wire.MSG_ECHO, b"x" * 64).hex()),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/")
    assert flood.stdin is not None and flood.stdout is not None
    try:
        with Control(PROTO) as ctl:
            track(ctl.sock)
            ctl.reset_stats()  # before the first flood message: each one is counted
            flood.stdin.write("go\n")
            flood.stdin.flush()
            assert flood.stdout.readline().strip() == "flooding"
            s = client()
            n = 20
            for i in range(n):
                s.send(wire.nlmsg(wire.MSG_ECHO, b"root", seq=i))
                (mtype, _, seq, payload), = recv_msgs(s, 1)
                detail = error_of(payload) if mtype == wire.NLMSG_ERROR else ""
                assert (mtype, seq, payload) == (wire.MSG_ECHO, i, b"root"), detail
            flood.stdin.close()  # the flood stops, then says how much it sent
            out = flood.stdout.read()
            flood.wait(60)
            flooded = json.loads(out.strip().splitlines()[-1])["sent"]
            st = ctl.wait_idle().fields
    finally:
        if flood.poll() is None:
            flood.kill()
    assert flooded > n
    # every refused message counted once, and none of them as workload
    assert (st["received"], st["processed"], st["replied"]) == (n, n, n)
    assert st["err_perm"] == flooded
    assert st["queue_overflows"] == 0


# --- scheduling, start-up (#13) ----------------------------------------------------------------

WATCHDOG_THRESH = Path("/proc/sys/kernel/watchdog_thresh")


def test_a_long_datagram_in_callback_mode_lets_the_cpu_go(module: Loaded) -> None:
    """Thousands of sink messages with busy work in one datagram: no soft lockup (#13.5).

    The soft-lockup watchdog is set to its shortest threshold (2 s) so that 4 s of work in one
    input() call shows without cond_resched() between messages; the module fixture fails the
    test on the report in dmesg.
    """
    assert Path("/proc/sys/kernel/soft_watchdog").read_text().strip() == "1"
    module(mode="callback", work_ns=2_000_000)
    thresh = WATCHDOG_THRESH.read_text()
    WATCHDOG_THRESH.write_text("1")
    try:
        s = client()
        s.settimeout(60)
        n = 2000  # × 2 ms of busy work
        s.send(b"".join(wire.nlmsg(wire.MSG_SINK, b"", seq=i) for i in range(n))
               + wire.nlmsg(wire.MSG_ECHO, b"done", seq=n))
        (mtype, _, seq, payload), = recv_msgs(s, 1)
        assert (mtype, seq, payload) == (wire.MSG_ECHO, n, b"done")
    finally:
        WATCHDOG_THRESH.write_text(thresh)


# --- netlink conventions (#13.8) ---------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_a_request_with_ack_gets_its_reply_then_the_ack(module: Loaded, mode: str) -> None:
    module(mode=mode)
    s = client()
    req_ack = wire.NLM_F_REQUEST | wire.NLM_F_ACK
    stamp = wire.stamp(9, time.monotonic_ns())
    s.send(wire.nlmsg(wire.MSG_ECHO, b"echo me", flags=req_ack, seq=1)
           + wire.nlmsg(wire.MSG_TIMED_ECHO, stamp, flags=req_ack, seq=2)
           + wire.nlmsg(wire.MSG_STATS_GET, b"", flags=req_ack, seq=3)
           + wire.nlmsg(0x7F, b"", flags=req_ack, seq=4))  # an error is its own ack
    by_seq: dict[int, list[tuple[int, bytes]]] = {}
    for mtype, _, seq, payload in recv_msgs(s, 7):  # in deferred modes stats come first
        by_seq.setdefault(seq, []).append((mtype, payload))
    assert {seq: [mtype for mtype, _ in msgs] for seq, msgs in by_seq.items()} == {
        1: [wire.MSG_ECHO, wire.NLMSG_ERROR], 2: [wire.MSG_TIMED_ECHO, wire.NLMSG_ERROR],
        3: [wire.MSG_STATS_GET, wire.NLMSG_ERROR], 4: [wire.NLMSG_ERROR]}
    assert by_seq[1][0][1] == b"echo me"
    assert [error_of(by_seq[seq][-1][1]) for seq in (1, 2, 3, 4)] == [0, 0, 0, errno.EOPNOTSUPP]
    s.settimeout(0.3)
    with pytest.raises(TimeoutError):  # nothing more: one ack each
        s.recv(4096)


@pytest.mark.parametrize("mode", MODES)
def test_netlink_own_types_are_skipped_not_answered(module: Loaded, mode: str) -> None:
    module(mode=mode)
    s = client()
    with Control(PROTO) as ctl:
        track(ctl.sock)
        ctl.reset_stats()
        # NLMSG_NOOP, NLMSG_DONE and a type just below NLMSG_MIN_TYPE, then an echo
        s.send(b"".join(wire.nlmsg(t, b"", flags=wire.NLM_F_REQUEST | wire.NLM_F_ACK, seq=t)
                        for t in (1, 3, 0x0F))
               + wire.nlmsg(wire.MSG_ECHO, b"after", seq=99))
        (mtype, _, seq, payload), = recv_msgs(s, 1)
        assert (mtype, seq, payload) == (wire.MSG_ECHO, 99, b"after")
        st = ctl.wait_idle().fields
    assert (st["received"], st["err_notsupp"], st["replied"]) == (1, 0, 1)


# --- what the deferred queue holds (#13.2) -----------------------------------------------------

def test_the_queue_is_bounded_in_bytes_as_well_as_messages(module: Loaded) -> None:
    module(mode="kthread", queue_len=1024, queue_bytes=262144, work_sleep_us=20000)
    s = client(rcvbuf=8 << 20)
    n, size = 40, 32768  # each held as its own ~33 KB skb: about 7 fit in 256 KiB
    with Control(PROTO) as ctl:
        track(ctl.sock)
        ctl.reset_stats()
        for i in range(n):
            s.send(wire.nlmsg(wire.MSG_ECHO, bytes(size), seq=i))
        got = recv_msgs(s, n)
        st = ctl.wait_idle().fields
    echoed = [seq for mtype, _, seq, _ in got if mtype == wire.MSG_ECHO]
    refused = [seq for mtype, _, seq, p in got
               if mtype == wire.NLMSG_ERROR and error_of(p) == errno.ENOBUFS]
    assert len(echoed) + len(refused) == n
    assert 1 <= st["queue_hwm"] <= 262144 // size
    assert st["queue_overflows"] == len(refused) >= n - 2 * (262144 // size)


def test_small_messages_of_a_large_datagram_are_held_as_copies(module: Loaded) -> None:
    """Each queued message used to hold the whole datagram's skb (#13.2)."""
    module(mode="kthread", work_sleep_us=5000)
    s = client(rcvbuf=8 << 20)
    n = 100  # 100 × 216 bytes: a datagram far larger than any one message
    with Control(PROTO) as ctl:
        track(ctl.sock)
        s.send(b"".join(wire.nlmsg(wire.MSG_ECHO, bytes(200), seq=i) for i in range(n)))
        st = ctl.stats().fields  # served at once; n × 5 ms of work are ahead
        assert len(recv_msgs(s, n)) == n
    assert st["queue_depth"] >= n // 2
    assert st["skbs_held"] == 0


# --- port ids (#13.4) --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["kthread", "workqueue"])
def test_a_closed_sockets_queued_replies_never_reach_the_next_owner_of_its_port(
        module: Loaded, mode: str) -> None:
    module(mode=mode, work_sleep_us=20000)
    old = client()
    port = old.getsockname()[0]
    for i in range(20):  # 20 × 20 ms queued
        old.send(wire.nlmsg(wire.MSG_ECHO, b"for the old socket", seq=i))
    old.close()
    new = track(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, PROTO))
    new.bind((port, 0))  # the port id, free again, taken by another socket
    new.settimeout(5)
    new.send(wire.nlmsg(wire.MSG_ECHO, b"mine", seq=100))
    got = []
    while not got or got[-1][2] != 100:
        got += recv_msgs(new, 1)
    # at most the one being processed when the old socket closed is past reach
    assert len([m for m in got if m[3] == b"for the old socket"]) <= 1
    assert got[-1][3] == b"mine"
    with Control(PROTO) as ctl:
        track(ctl.sock)
        st = ctl.wait_idle(5).fields
    # the old socket's messages are still processed; their replies fail as to a closed socket
    assert (st["received"], st["processed"], st["skbs_held"]) == (21, 21, 0)
    assert st["err_reply"] >= 19


# --- allow_unpriv=1: what a user may do (#13.3) ------------------------------------------------

# As nobody: an echo, a stats read, the generator start/stop and a stats reset (answers: "ok" or
# the errno), then a send to group 1 and to the port id in argv[2] (the send's errno, or "sent").
UNPRIV = """
import json, socket, struct, sys
proto, port = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, proto)
s.bind((0, 0))
s.settimeout(5)
out = {}
for name, mtype, payload in (("echo", 0x10, b"abcd"), ("stats_get", 0x16, b""),
                             ("gen_start", 0x14, bytes.fromhex(sys.argv[3])),
                             ("gen_stop", 0x15, b""), ("stats_reset", 0x17, b"")):
    s.send(struct.pack("=IHHII", 16 + len(payload), mtype, 1, 7, 0) + payload)
    d = s.recv(1 << 16)
    t = struct.unpack_from("=H", d, 4)[0]
    out[name] = -struct.unpack_from("=i", d, 16)[0] if t == 2 else "ok"
for name, addr in (("to_group", (0, 1)), ("to_port", (port, 0))):
    try:
        s.sendto(struct.pack("=IHHII", 16, 0x18, 0, 0, 0), addr)
        out[name] = "sent"
    except OSError as e:
        out[name] = e.errno
print(json.dumps(out))
"""


def test_allow_unpriv_serves_users_but_keeps_the_lab_to_root(module: Loaded) -> None:
    module(mode="callback", allow_unpriv=1)
    listener = track(open_socket(PROTO, groups=(1,)))
    listener.settimeout(0.3)
    gen = wire.gen_request(wire.groups_mask([1]), 64, count=1).hex()
    out = subprocess.run(_nobody(UNPRIV, PROTO, listener.getsockname()[0], gen),
                         capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "echo": "ok", "stats_get": "ok", "gen_start": errno.EPERM, "gen_stop": errno.EPERM,
        "stats_reset": errno.EPERM, "to_group": errno.EPERM, "to_port": errno.EPERM}
    with pytest.raises(TimeoutError):  # nothing reached the group's listener
        listener.recv(4096)
