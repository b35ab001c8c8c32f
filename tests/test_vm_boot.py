"""How the lab VM's exit is read: lost statuses, and guests that died before the command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nlperf.errors import RunFailed
from nlperf.targets import vm

KERNEL = vm.LabKernel("6.12.117+deb12-amd64", Path("/boot/vmlinuz-x"), Path("/lib/modules/x"))


def _fake_boots(monkeypatch: pytest.MonkeyPatch, outcomes: list[tuple[int, bool, str | None]]
                ) -> list[vm.Markers]:
    """Each boot returns rc; the guest may have started the command and written a status."""
    seen: list[vm.Markers] = []
    monkeypatch.setattr(vm.shutil, "which", lambda _name: "/usr/bin/qemu-system-x86_64")

    def boot_once(*args: Any) -> int:
        markers: vm.Markers = args[-1]
        seen.append(markers)
        rc, started, status = outcomes[len(seen) - 1]
        if started:
            markers.started.touch()
        if status is not None:
            markers.status.write_text(status + "\n")
        return rc

    monkeypatch.setattr(vm, "_boot_once", boot_once)
    return seen


def test_status_written_by_the_guest_replaces_a_lost_one(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    seen = _fake_boots(monkeypatch, [(255, True, "0")])
    assert vm.boot(KERNEL, "true", rwdirs=[tmp_path], timeout=10) == 0
    assert len(seen) == 1
    assert list(tmp_path.iterdir()) == []  # markers cleaned up


def test_a_real_failure_is_not_masked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_boots(monkeypatch, [(3, True, "3")])
    assert vm.boot(KERNEL, "false", rwdirs=[tmp_path], timeout=10) == 3
    _fake_boots(monkeypatch, [(255, True, None)])  # started, then the guest died
    assert vm.boot(KERNEL, "x", rwdirs=[tmp_path], timeout=10) == 255


def test_a_guest_that_died_before_the_command_is_booted_again(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen = _fake_boots(monkeypatch, [(255, False, None), (0, True, "0")])
    assert vm.boot(KERNEL, "true", rwdirs=[tmp_path], timeout=10) == 0
    assert len(seen) == 2 and seen[0] != seen[1]


def test_three_dead_boots_are_a_clear_failure(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    _fake_boots(monkeypatch, [(255, False, None)] * 3)
    with pytest.raises(RunFailed, match="died during boot 3 times"):
        vm.boot(KERNEL, "true", rwdirs=[tmp_path], timeout=10)


def test_guest_script_marks_start_and_status() -> None:
    m = vm.Markers(Path("/r/.vm-started-x"), Path("/r/.vm-exit-x"))
    script = vm.guest_script("do it", Path("/w"), "tcg", m)
    assert script.startswith("touch /r/.vm-started-x;")
    assert "cd /w && do it; rc=$?; echo $rc > /r/.vm-exit-x; sync; exit $rc" in script
    assert "NLPERF_VM_ACCEL=tcg" in script


def test_guest_script_forwards_nlperf_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guest's environment is fresh: NLPERF_SOAK=1 make test-vm must reach the tests."""
    monkeypatch.setenv("NLPERF_SOAK", "1")
    monkeypatch.setenv("NLPERF_DEBUG", "a b")
    monkeypatch.setenv("NLPERF_VM_ACCEL", "kvm")  # ours to set in the guest, not the host's
    monkeypatch.setenv("OTHER", "x")
    m = vm.Markers(Path("/r/.vm-started-x"), Path("/r/.vm-exit-x"))
    script = vm.guest_script("do it", Path("/w"), "tcg", m)
    assert "NLPERF_DEBUG='a b' NLPERF_SOAK=1 NLPERF_VM_ACCEL=tcg;" in script
    assert "OTHER" not in script and "kvm" not in script
