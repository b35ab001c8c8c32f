"""Which kernels the lab VM can boot, and whether it may use KVM: on fabricated files."""

from __future__ import annotations

from pathlib import Path

import pytest

from nlperf.errors import BadInput, RunFailed
from nlperf.targets import vm

# --- lab kernels ---------------------------------------------------------------------------------


def make_tree(tmp_path: Path, with_build: list[str], without_build: list[str]) -> tuple[Path, Path]:
    boot, modules = tmp_path / "boot", tmp_path / "modules"
    boot.mkdir()
    modules.mkdir()
    for release in with_build + without_build:
        (boot / f"vmlinuz-{release}").write_bytes(b"\x7fkernel")
    for release in with_build:
        (modules / release / "build").mkdir(parents=True)
    # Headers for a kernel whose image is gone must not count either.
    (modules / "7.0.0-1-amd64" / "build").mkdir(parents=True)
    (boot / "vmlinuz.old").write_bytes(b"")
    return boot, modules


def test_lab_kernels_version_order_and_build_dirs(tmp_path: Path) -> None:
    boot, modules = make_tree(
        tmp_path, ["6.1.0-9-amd64", "6.9.0-1-amd64", "6.10.0-1-amd64", "6.1.0-56-amd64"],
        ["6.12.0-1-amd64"])
    kernels = vm.lab_kernels(boot, modules)
    assert [k.release for k in kernels] == [
        "6.10.0-1-amd64", "6.9.0-1-amd64", "6.1.0-56-amd64", "6.1.0-9-amd64"]
    assert kernels[0].vmlinuz == boot / "vmlinuz-6.10.0-1-amd64"
    assert kernels[0].build_dir == modules / "6.10.0-1-amd64" / "build"


def test_lab_kernels_missing_dirs(tmp_path: Path) -> None:
    assert vm.lab_kernels(tmp_path / "nope", tmp_path / "nope2") == []


def test_pick_lab_kernel(tmp_path: Path) -> None:
    boot, modules = make_tree(tmp_path, ["6.1.0-56-amd64", "6.10.0-1-amd64"], ["6.12.0-1-amd64"])
    assert vm.pick_lab_kernel(None, boot, modules).release == "6.10.0-1-amd64"
    assert vm.pick_lab_kernel("6.1.0-56-amd64", boot, modules).release == "6.1.0-56-amd64"
    with pytest.raises(BadInput) as unknown:
        vm.pick_lab_kernel("5.10.0-1-amd64", boot, modules)
    assert "6.10.0-1-amd64, 6.1.0-56-amd64" in unknown.value.message
    with pytest.raises(BadInput) as headerless:
        vm.pick_lab_kernel("6.12.0-1-amd64", boot, modules)
    assert "build" in headerless.value.message
    assert headerless.value.hint == "install linux-headers-6.12.0-1-amd64"


def test_a_version_prefix_names_one_lab_kernel(tmp_path: Path) -> None:
    boot, modules = make_tree(tmp_path, ["6.1.0-56-amd64", "6.12.117+deb12-amd64",
                                         "6.10.0-1-amd64"], ["6.9.0-1-amd64"])
    def pick(wanted: str) -> str:
        return vm.pick_lab_kernel(wanted, boot, modules).release
    assert pick("6.1") == "6.1.0-56-amd64"  # never 6.12 or 6.10: the prefix ends at a "."
    assert pick("6.12") == "6.12.117+deb12-amd64"
    assert pick("6.12.117") == "6.12.117+deb12-amd64"
    assert pick("6.1.0-56") == "6.1.0-56-amd64"
    assert pick("6.12.117+deb12-amd64") == "6.12.117+deb12-amd64"
    with pytest.raises(BadInput) as several:
        pick("6")
    assert several.value.message == (
        "kernel '6' matches 3 lab kernels (6.12.117+deb12-amd64, 6.10.0-1-amd64, "
        "6.1.0-56-amd64): give a longer prefix or the full release")
    for wanted in ("6.1.0-5", "6.11", "6.1.0-56-amd", "5"):
        with pytest.raises(BadInput, match=f"^unknown kernel '{wanted}'; available: "):
            pick(wanted)
    with pytest.raises(BadInput) as headerless:
        pick("6.9")
    assert headerless.value.hint == "install linux-headers-6.9.0-1-amd64"
    # an exact release wins over a prefix that would name several
    (tmp_path / "two").mkdir()
    boot2, modules2 = make_tree(tmp_path / "two", ["6.1", "6.1.0-56-amd64"], [])
    assert vm.pick_lab_kernel("6.1", boot2, modules2).release == "6.1"


def test_pick_lab_kernel_none(tmp_path: Path) -> None:
    boot, modules = make_tree(tmp_path, [], ["6.1.0-56-amd64"])
    with pytest.raises(RunFailed) as exc:
        vm.pick_lab_kernel(None, boot, modules)
    assert exc.value.message.startswith("no lab kernel: ")
    assert exc.value.hint == "make setup installs linux-image-amd64 and linux-headers-amd64"
    # Naming a kernel does not turn a missing install into the user's mistake.
    with pytest.raises(RunFailed):
        vm.pick_lab_kernel("6.1.0-56-amd64", boot, modules)


# --- KVM ------------------------------------------------------------------------------------------


@pytest.fixture
def fake_kvm(tmp_path: Path) -> tuple[Path, Path, Path]:
    dev = tmp_path / "kvm"
    dev.write_bytes(b"")
    with_vmx = tmp_path / "cpuinfo-vmx"
    with_vmx.write_text("processor\t: 0\nflags\t\t: fpu sse vmx avx\n\n")
    plain = tmp_path / "cpuinfo"
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse avx hypervisor\n\n")
    return dev, with_vmx, plain


def test_kvm_usable_detection(fake_kvm: tuple[Path, Path, Path], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    dev, with_vmx, plain = fake_kvm
    monkeypatch.delenv("NLPERF_ACCEL", raising=False)
    ok, why = vm.kvm_usable(dev, with_vmx)
    assert ok and "vmx" in why
    ok, why = vm.kvm_usable(dev, plain)
    assert not ok and "no vmx/svm" in why
    ok, why = vm.kvm_usable(tmp_path / "absent", with_vmx)
    assert not ok and "read-write" in why


def test_kvm_usable_env_override(fake_kvm: tuple[Path, Path, Path], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    dev, with_vmx, _ = fake_kvm
    monkeypatch.setenv("NLPERF_ACCEL", "tcg")
    ok, why = vm.kvm_usable(dev, with_vmx)
    assert not ok and "NLPERF_ACCEL=tcg" in why
    monkeypatch.setenv("NLPERF_ACCEL", "kvm")
    ok, why = vm.kvm_usable(tmp_path / "absent", tmp_path / "absent")
    assert ok and "NLPERF_ACCEL=kvm" in why
    monkeypatch.setenv("NLPERF_ACCEL", "hvf")
    ok, why = vm.kvm_usable(dev, with_vmx)
    assert ok and "ignored" in why
