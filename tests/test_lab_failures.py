"""When the lab itself is broken: one clear line, the right exit status, nothing left running,
and what a later look needs (the failed summary, the build log) kept. No VM boots here: each
failure is provoked before the boot, by a missing piece or a fake (the VM that hangs is in
tests/test_faults_vm.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nlperf import kmod, results
from nlperf.errors import RunFailed
from nlperf.targets import vm
from tests.lab import require_lab_vm

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
NLPERF = str(VENV_BIN / "nlperf")
SMOKE = str(ROOT / "scenarios/smoke.yaml")


def _nlperf(*args: str, env: dict[str, str] | None = None,
            argv0: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in (env or os.environ).items() if k != "NLPERF_DEBUG"}
    return subprocess.run([*(argv0 or [NLPERF]), *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env)


def _error_line(stderr: str) -> str:
    """The one line that says what went wrong (other lines are progress notes)."""
    assert "Traceback" not in stderr, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("nlperf: error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def _nothing_running_for(path: Path) -> None:
    """No process (vng, qemu, the leash, make) names this run's directory."""
    left = subprocess.run(["pgrep", "-af", str(path)], capture_output=True, text=True).stdout
    assert left == "", left


def test_an_unknown_lab_kernel_is_bad_input_before_anything_exists(tmp_path: Path) -> None:
    require_lab_vm()
    out = tmp_path / "run"
    proc = _nlperf("run", SMOKE, "--target", "vm", "--kernel", "9.9.9-nope", "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    available = ", ".join(k.release for k in vm.lab_kernels())
    assert _error_line(proc.stderr) == (
        f"nlperf: error: unknown kernel '9.9.9-nope'; available: {available}")
    assert not out.exists()


def test_a_kernel_matrix_value_naming_several_lab_kernels_is_bad_input(tmp_path: Path) -> None:
    require_lab_vm()
    releases = [k.release for k in vm.lab_kernels()]
    major = releases[0].split(".")[0]  # "6": a prefix of every 6.x lab kernel
    named = [r for r in releases if vm.names_release(major, r)]
    if len(named) < 2:
        pytest.skip(f"one lab kernel starts with {major}.: no ambiguous prefix here")
    scenario = tmp_path / "kernels.yaml"
    text = (ROOT / "scenarios/kernels.yaml").read_text()
    assert 'kernel: ["6.1", "6.12"]' in text  # else the run below would boot the VM
    scenario.write_text(text.replace('kernel: ["6.1", "6.12"]', f'kernel: ["6.1", "{major}"]'))
    out = tmp_path / "run"
    proc = _nlperf("run", str(scenario), "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert _error_line(proc.stderr) == (
        f"nlperf: error: kernel '{major}' matches {len(named)} lab kernels "
        f"({', '.join(named)}): give a longer prefix or the full release")
    assert not out.exists()


def _path_without(tmp_path: Path, tool: str) -> str:
    """This PATH with every executable but ``tool``, linked into one directory."""
    shadow = tmp_path / "bin"
    shadow.mkdir()
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not d or not Path(d).is_dir():
            continue
        for exe in Path(d).iterdir():
            if exe.name != tool and not (shadow / exe.name).exists() and os.access(exe, os.X_OK):
                (shadow / exe.name).symlink_to(exe)
    return str(shadow)


def test_missing_qemu_is_one_line_and_leaves_no_run_directory(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=_path_without(tmp_path, "qemu-system-x86_64"))
    out = tmp_path / "run"
    proc = _nlperf("run", SMOKE, "--target", "vm", "--out", str(out), env=env)
    assert proc.returncode == 1, proc.stderr
    line = _error_line(proc.stderr)
    assert line.startswith("nlperf: error: vm target not possible: qemu: "
                           "qemu-system-x86_64 not found"), line
    assert "make setup installs qemu-system-x86" in line
    assert not out.exists()
    _nothing_running_for(out)


# The real `nlperf` CLI with the module's sources swapped for a broken copy and the VM boot
# replaced by an exit the test would see: the run must stop at the build.
BROKEN_BUILD = """
import os, sys
from pathlib import Path
from nlperf import cli, kmod
from nlperf.targets import vm
src, build, *args = sys.argv[1:]
kmod.KMOD_SRC = Path(src)
kmod.kmod_build_dir = lambda release: Path(build) / release
vm.boot = lambda *a, **k: os._exit(97)
sys.argv = ["nlperf", *args]
cli.main()
"""


def test_a_module_build_error_names_its_log_and_keeps_it(tmp_path: Path) -> None:
    require_lab_vm()
    broken = tmp_path / "kmod"
    shutil.copytree(ROOT / "kmod", broken)
    with open(broken / "nlperf.c", "a") as f:
        f.write("\nthis_is_not_c;\n")
    out = tmp_path / "run"
    proc = _nlperf(str(broken), str(tmp_path / "build"), "run", SMOKE, "--target", "vm",
                   "--out", str(out), argv0=[sys.executable, "-c", BROKEN_BUILD])
    assert proc.returncode == 1, proc.stderr
    line = _error_line(proc.stderr)
    log = out / "kmod-build.log"
    release = vm.pick_lab_kernel().release
    assert line.startswith(f"nlperf: error: module build for {release} failed: "), line
    assert "nlperf.c:" in line and "error:" in line.removeprefix("nlperf: error: ")
    assert f"(full log: {log})" in line
    assert "this_is_not_c" in log.read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert results.validation_errors(summary) == []
    assert (summary["status"], summary["cases"]) == ("failed", [])
    assert line == f"nlperf: error: {summary['error']}; results {out}"
    assert sorted(p.name for p in out.iterdir()) == ["kmod-build.log", "scenario.yaml",
                                                     "summary.json"]
    _nothing_running_for(out)


def test_a_build_without_make_is_one_line_and_logged(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    require_lab_vm()  # a kernel build directory to build against
    release = vm.pick_lab_kernel().release
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    log = tmp_path / "kmod-build.log"
    with pytest.raises(RunFailed) as e:
        kmod.build(release, build_dir=tmp_path / "build", log=log)
    assert str(e.value) == (f"module build for {release} failed: error: cannot run make -C "
                            f"/lib/modules/{release}/build M={tmp_path / 'build'} modules: "
                            f"No such file or directory (full log: {log})")
    assert log.read_text().startswith("error: cannot run make ")


def test_a_probe_that_cannot_attach_fails_the_run_before_any_repetition(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe function this kernel lacks: the case and the run fail with the probe's one line,
    no repetition runs, and the module is unloaded all the same (the runner's side only)."""
    from nlperf import cases as cases_mod
    from nlperf import models, runner, scenario

    why = "probes: netlink_unicast is not a traceable function on this kernel"

    def refuse(*_args: object, **_kw: object) -> None:
        raise RunFailed(why)

    unloads: list[bool] = []
    monkeypatch.setattr(cases_mod, "ProbeSession", refuse)
    monkeypatch.setattr(cases_mod, "run_repetition",
                        lambda *_a, **_k: pytest.fail("a repetition ran without its probes"))
    monkeypatch.setattr(kmod, "unload", lambda: unloads.append(True))
    cases = scenario.expand({"name": "p", "unicast": {"count": 4},
                             "probes": {"enabled": True}})[1]
    env = models.Env(kernel="6.1.0-56-amd64", target="host", accel="tcg", clocksource="tsc",
                     cpus=2, nlperf_version="0.1.0", python="3.11.2", module_params={},
                     probes=models.EnvProbes(attach={}))
    group = models.GroupResult(status=models.Status.running, env=env, cases=[],
                               probe_histograms={})
    progress: list[models.Progress] = []
    state = runner._execute(cases, Path("nlperf.ko"), group, progress.append,
                            dt.datetime.now(dt.UTC))
    assert (state.status, state.error) == (models.Status.failed, why)
    assert (group.status, group.error) == (models.Status.failed, why)
    (case,) = group.cases
    assert (case.status, case.error, case.repetitions) == (models.Status.failed, why, [])
    assert progress == [] and unloads  # the boot and the runner both make sure
