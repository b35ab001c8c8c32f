"""Grouping cases by where they run: one VM boot per kernel, flags winning over the matrix."""

from __future__ import annotations

from pathlib import Path

import pytest

from nlperf import capabilities, runner, scenario
from nlperf.errors import BadInput
from nlperf.targets import vm

KERNELS = {r: vm.LabKernel(r, Path(f"/boot/vmlinuz-{r}"), Path(f"/lib/modules/{r}"))
           for r in ("6.1.0-56-amd64", "6.12.9-amd64")}


@pytest.fixture(autouse=True)
def fake_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    def pick_target(requested: str, checks: object = None) -> tuple[str, str]:
        return ("vm" if requested in ("auto", "vm") else "host"), f"picked for {requested}"

    def pick_lab_kernel(release: str | None = None) -> vm.LabKernel:
        if release is None:
            return KERNELS["6.12.9-amd64"]
        if release not in KERNELS:
            raise BadInput(f"no lab kernel {release}")
        return KERNELS[release]

    monkeypatch.setattr(capabilities, "pick_target", pick_target)
    monkeypatch.setattr(vm, "pick_lab_kernel", pick_lab_kernel)


def _cases(matrix: dict[str, list[object]]) -> list[scenario.Case]:
    return scenario.expand({"name": "p", "unicast": {"count": 10}, "matrix": matrix})[1]


def test_one_group_per_kernel_in_matrix_order() -> None:
    cases = _cases({"kernel": ["6.1.0-56-amd64", "6.12.9-amd64"],
                    "module.mode": ["callback", "kthread"]})
    said: list[str] = []
    groups = runner.plan(cases, runner.RunRequest(Path("x.yaml")), said.append)
    assert [(g.target, g.kernel.release if g.kernel else None, [c.id for c in g.cases])
            for g in groups] == [
        ("vm", "6.1.0-56-amd64", ["kernel=6.1.0-56-amd64,mode=callback",
                                  "kernel=6.1.0-56-amd64,mode=kthread"]),
        ("vm", "6.12.9-amd64", ["kernel=6.12.9-amd64,mode=callback",
                                "kernel=6.12.9-amd64,mode=kthread"]),
    ]
    assert said == ["picked for auto"]


def test_command_line_kernel_and_target_win_over_the_matrix() -> None:
    cases = _cases({"kernel": ["6.1.0-56-amd64", "6.12.9-amd64"]})
    groups = runner.plan(cases, runner.RunRequest(Path("x.yaml"), kernel="6.1.0-56-amd64"),
                         lambda _m: None)
    assert len(groups) == 1 and len(groups[0].cases) == 2
    groups = runner.plan(_cases({"target": ["vm", "host"]}),
                         runner.RunRequest(Path("x.yaml"), target="host"), lambda _m: None)
    assert [g.target for g in groups] == ["host"]


def test_mixed_targets_make_separate_groups() -> None:
    groups = runner.plan(_cases({"target": ["vm", "host"]}), runner.RunRequest(Path("x.yaml")),
                         lambda _m: None)
    assert [(g.target, len(g.cases)) for g in groups] == [("vm", 1), ("host", 1)]


def test_unknown_kernel_in_the_matrix_is_refused_before_anything_runs() -> None:
    with pytest.raises(BadInput, match=r"no lab kernel 5\.10"):
        runner.plan(_cases({"kernel": ["6.1.0-56-amd64", "5.10"]}),
                    runner.RunRequest(Path("x.yaml")), lambda _m: None)
