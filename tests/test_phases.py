"""Where a run's time goes (nlperf/phases.py): sums, the VM's own time, the order shown."""

import pytest

from nlperf import phases


def test_the_run_sums_groups_and_repetitions_and_the_vm_boot_is_what_the_inner_run_did_not_use(
) -> None:
    got = phases.of_run({"module_build": 2.0, "vm": 50.0, "report": 3.0},
                        [{"bpf_compile": 9.0, "bpf_attach": 1.0, "inner_run": 40.0}],
                        [{"load": 0.5, "measure": 2.0}, {"load": 0.25, "measure": 1.5}],
                        total=60.0)
    assert got == {"module_build": 2.0, "vm_boot": 10.0, "bpf_compile": 9.0, "bpf_attach": 1.0,
                   "load": 0.75, "measure": 3.5, "report": 3.0, "other": 30.75, "total": 60.0}
    assert list(got) == ["module_build", "vm_boot", "bpf_compile", "bpf_attach", "load",
                         "measure", "report", "other", "total"]
    # the phases add up to the total
    assert sum(v for k, v in got.items() if k != "total") == got["total"]


def test_a_native_run_has_no_vm_boot_and_two_vm_boots_add_up() -> None:
    assert "vm_boot" not in phases.of_run({"module_build": 1.0}, [], [{"load": 1.0}], None)
    two = phases.of_run({"vm": 30.0}, [{"inner_run": 10.0}, {"inner_run": 12.0}], [], None)
    assert two == {"vm_boot": 8.0}


def test_laps_end_the_phase_they_name(monkeypatch: pytest.MonkeyPatch) -> None:
    now = iter([100.0, 100.5, 102.0, 102.25])
    monkeypatch.setattr(phases.time, "monotonic", lambda: next(now))
    laps = phases.Laps()
    laps.lap("load")
    laps.lap("measure")
    laps.lap("load")
    assert laps.seconds == {"load": 0.75, "measure": 1.5}


def test_lines_give_each_phase_its_share_of_the_total() -> None:
    assert phases.lines({"load": 1.0, "measure": 3.0, "total": 8.0}) == [
        "load          1.00 s   12.5%", "measure       3.00 s   37.5%", "total         8.00 s"]
