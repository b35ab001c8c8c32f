"""Capability detection: pure logic on fabricated inputs, plus what this machine really reports."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from nlperf import capabilities as cap
from nlperf.capabilities import Check
from nlperf.errors import BadInput, RunFailed

ALL_NAMES = ["root", "module loading", "kprobes", "fentry", "tracefs", "BTF", "kernel headers",
             "BCC", "qemu", "virtme-ng", "KVM", "lab kernels"]


# --- individual checks on fabricated files -------------------------------------------------------


def test_module_loading_paths(tmp_path: Path) -> None:
    mods, disabled = tmp_path / "modules", tmp_path / "modules_disabled"
    c = cap._check_module_loading(mods, disabled)
    assert not c.ok and "CONFIG_MODULES" in c.detail and c.fix
    mods.write_text("")
    disabled.write_text("1\n")
    c = cap._check_module_loading(mods, disabled)
    assert not c.ok and "is 1" in c.detail
    disabled.write_text("0\n")
    assert cap._check_module_loading(mods, disabled).ok


def test_tracefs_mounted_parser(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("sysfs /sys sysfs rw 0 0\n")
    assert not cap._tracefs_mounted(mounts)
    mounts.write_text("sysfs /sys sysfs rw 0 0\nnodev /sys/kernel/tracing tracefs rw 0 0\n")
    assert cap._tracefs_mounted(mounts)


def test_find_tool_beside_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "vng"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    assert cap.find_tool("vng") == tool
    assert cap.find_tool("virtme-run") is None
    c = cap.check_vng()
    assert not c.ok and "virtme-run" in c.detail and c.fix


def test_check_kvm_follows_nlperf_accel(monkeypatch: pytest.MonkeyPatch) -> None:
    # check_kvm reads the same variable as the VM's accelerator choice.
    monkeypatch.setenv("NLPERF_ACCEL", "tcg")
    c = cap.check_kvm()
    assert not c.ok and "NLPERF_ACCEL=tcg" in c.detail


def test_crashing_check_yields_failed_check() -> None:
    @cap._never_raises("boom")
    def check_boom() -> Check:
        raise RuntimeError("bug")

    c = check_boom()
    assert c.name == "boom" and not c.ok and "bug" in c.detail and c.fix


# --- target choice -------------------------------------------------------------------------------


def checks(failing: set[str]) -> list[Check]:
    return [Check(n, n not in failing, f"{n} seen", None if n not in failing else f"fix {n}")
            for n in ALL_NAMES]


HOST_LIKE_THIS = {"module loading", "kprobes", "fentry", "kernel headers", "KVM"}


def test_host_capable() -> None:
    ok, why = cap.host_capable(checks(set()))
    assert ok and "kprobes, fentry" in why
    ok, why = cap.host_capable(checks({"kprobes"}))
    assert ok and "probes: fentry" in why
    ok, why = cap.host_capable(checks(HOST_LIKE_THIS))
    assert not ok
    assert why == "host lacks module loading, kprobes or fentry, kernel headers"
    ok, why = cap.host_capable(checks({"root", "BCC"}))
    assert not ok and "root" in why and "BCC" in why
    # A check that was never run counts as missing, not as passed.
    ok, why = cap.host_capable([c for c in checks(set()) if c.name != "tracefs"])
    assert not ok and "tracefs" in why


def test_pick_target_auto() -> None:
    target, why = cap.pick_target("auto", checks(HOST_LIKE_THIS))
    assert target == "vm"
    assert why.startswith("auto picked vm: host lacks module loading, kprobes or fentry, "
                          "kernel headers")
    assert "lab kernels seen" in why and "KVM seen" in why
    target, why = cap.pick_target("auto", checks({"fentry", "KVM"}))
    assert target == "host" and why.startswith("auto picked host")


def test_pick_target_auto_with_neither() -> None:
    with pytest.raises(RunFailed) as exc:
        cap.pick_target("auto", checks(HOST_LIKE_THIS | {"qemu"}))
    assert "module loading" in exc.value.message and "qemu" in exc.value.message
    assert exc.value.hint == "fix qemu"


def test_pick_target_host() -> None:
    with pytest.raises(RunFailed) as exc:
        cap.pick_target("host", checks(HOST_LIKE_THIS))
    assert "module loading" in exc.value.message and "kernel headers" in exc.value.message
    assert exc.value.hint == "use --target vm"
    assert cap.pick_target("host", checks({"qemu", "lab kernels"}))[0] == "host"


def test_pick_target_vm() -> None:
    target, why = cap.pick_target("vm", checks(HOST_LIKE_THIS))
    assert target == "vm" and why.startswith("vm requested")
    with pytest.raises(RunFailed) as exc:
        cap.pick_target("vm", checks({"virtme-ng", "lab kernels"}))
    assert "virtme-ng" in exc.value.message and "lab kernels" in exc.value.message
    assert exc.value.hint == "fix virtme-ng; fix lab kernels"
    with pytest.raises(BadInput):
        cap.pick_target("cloud", checks(set()))


# --- this machine --------------------------------------------------------------------------------


def test_run_checks_on_this_machine() -> None:
    results = cap.run_checks()
    assert [c.name for c in results] == ALL_NAMES
    for c in results:
        assert c.detail and "\n" not in c.detail, c
        assert (c.fix is None) == c.ok, c
        assert c.fix is None or "\n" not in c.fix
    by = {c.name: c for c in results}
    assert by["root"].ok == (os.geteuid() == 0)
    if not Path("/proc/modules").exists():
        # This microVM host: no CONFIG_MODULES, no CONFIG_KPROBES (LAB-NOTES).
        assert not by["module loading"].ok
        assert not by["kprobes"].ok and "kprobe PMU missing" in by["kprobes"].detail
    if not by["fentry"].ok:
        assert "failed" in by["fentry"].detail or "BTF" in by["fentry"].detail
    if not cap.host_capable(results)[0] and all(by[n].ok for n in cap.VM_NEEDS):
        target, why = cap.pick_target("auto", results)
        assert target == "vm" and why.startswith("auto picked vm: host lacks")
