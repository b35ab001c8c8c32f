"""The relay path end to end (in the lab VM): what the relay sender asked for, what the module
refused and what it broadcast add up exactly, per repetition and pooled into the case."""

from __future__ import annotations

from pathlib import Path

from nlperf import measure, metrics, scenario
from tests.vm.conftest import Loaded

COUNT = 200


def test_relays_refused_by_a_full_queue_are_counted(module: Loaded, ko: Path) -> None:
    # a two-entry queue served at most every millisecond: relays sent as fast as Python can
    # overflow it (ENOBUFS), and those relays are never broadcast
    _, cases = scenario.expand({
        "name": "relay", "module": {"mode": "kthread", "queue_len": 2, "work_sleep_us": 1000},
        "multicast": {"source": "relay", "groups": [1, 2], "count": COUNT,
                      "receivers": [{"count": 1, "groups": [1, 2], "rcvbuf": 4 << 20}],
                      "drain_timeout_ms": 500},
        "probes": {"enabled": False}})
    (case,) = cases
    rep = measure.run_repetition(case, 0, ko, 120.0)
    block = rep.block.multicast
    assert block is not None and block.source == "relay"
    assert block.relay_requested == COUNT + 1  # and the end marker
    assert block.relay_errors is not None and block.relay_errors > 0
    for group in ("1", "2"):
        assert block.sent_by_group[group] + block.relay_errors == block.relay_requested
    (receiver,) = block.receivers
    assert receiver.sent == sum(block.sent_by_group.values())
    assert (receiver.lost, receiver.sk_drops) == (0, 0)  # a 4 MiB queue never overflows
    # a refused relay is a gap in the sequence: no spacing spans it
    assert block.send_spacing_by_group is not None and block.send_spacing is not None
    for group in (1, 2):
        spaced = block.send_spacing_by_group[str(group)].count
        assert spaced == rep.send_spacing[group].size
        assert spaced <= block.sent_by_group[str(group)] - 2  # n sends and an end marker
    # the case level carries them: refused relays reach the report
    pooled = metrics.pool_multicast([block, block], {}, [rep.send_spacing] * 2)
    assert (pooled.relay_requested, pooled.relay_errors) == (2 * block.relay_requested,
                                                              2 * block.relay_errors)
    assert pooled.send_spacing is not None
    assert pooled.send_spacing.count == 2 * block.send_spacing.count
