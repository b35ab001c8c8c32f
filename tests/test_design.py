"""nlperf/design.py's schedule, driven as nlperf/cases.py drives it, without running anything.

A fake boot counts each case's probed and control runs as the schedule hands them out; a
case wants another (probed) repetition until it has its ``reps`` — what ``repetitions: auto``
does when cases stop at different counts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from nlperf import design
from nlperf.models import OrderKind

P, C = False, True  # Run.control


@dataclass
class FakeBoot:
    reps: list[int]  # probed repetitions each case takes
    control: list[bool]  # whether each case has a control pass
    probed_runs: list[int] = field(init=False)
    control_runs: list[int] = field(init=False)
    rounds: list[list[int]] = field(default_factory=list)  # what on_round was told
    asked_unbalanced: list[int] = field(default_factory=list)  # wants_more mid-pair

    def __post_init__(self) -> None:
        self.probed_runs = [0] * len(self.reps)
        self.control_runs = [0] * len(self.reps)

    def wants_more(self, case: int) -> bool:
        if self.control[case] and self.control_runs[case] != self.probed_runs[case]:
            self.asked_unbalanced.append(case)
        return self.probed_runs[case] < self.reps[case]

    def run(self, kind: OrderKind, seed: int = 0) -> list[tuple[int, bool]]:
        out = []
        for planned in design.schedule(
                kind, len(self.reps), wants_more=self.wants_more,
                has_control=lambda i: self.control[i], done=lambda i: self.probed_runs[i],
                on_round=self.rounds.append, rng=random.Random(seed)):
            out.append((planned.case, planned.control))
            if planned.control:
                self.control_runs[planned.case] += 1
            else:
                self.probed_runs[planned.case] += 1
        return out


def test_round_robin_alternates_which_pass_goes_first_by_round() -> None:
    boot = FakeBoot(reps=[3, 3], control=[True, True])
    assert boot.run("round-robin") == [
        (0, P), (0, C), (1, P), (1, C),  # round 0: probed first
        (0, C), (0, P), (1, C), (1, P),  # round 1: control first
        (0, P), (0, C), (1, P), (1, C)]  # round 2: probed first
    assert boot.rounds == [[0, 1]] * 3
    assert boot.probed_runs == boot.control_runs == [3, 3]


def test_random_alternates_too_whatever_the_cases_order_in_the_round() -> None:
    # random.Random(3) shuffles [0, 1] into [1, 0], [1, 0], [0, 1]
    boot = FakeBoot(reps=[3, 3], control=[True, True])
    assert boot.run("random", seed=3) == [
        (1, P), (1, C), (0, P), (0, C),
        (1, C), (1, P), (0, C), (0, P),
        (0, P), (0, C), (1, P), (1, C)]
    assert boot.rounds == [[1, 0], [1, 0], [0, 1]]


def test_repetitions_auto_a_control_that_goes_first_always_gets_its_probed_partner() -> None:
    # case 0 is done after 2 repetitions, case 1 after 4: rounds 2 and 3 are case 1's alone
    boot = FakeBoot(reps=[2, 4], control=[True, True])
    assert boot.run("round-robin") == [
        (0, P), (0, C), (1, P), (1, C),
        (0, C), (0, P), (1, C), (1, P),
        (1, P), (1, C),
        (1, C), (1, P)]
    assert boot.rounds == [[0, 1], [0, 1], [1], [1]]
    # no control repetition without its probed one, none extra, and the stopping rule is
    # only ever asked between pairs, never after a control run that went first
    assert boot.probed_runs == boot.control_runs == [2, 4]
    assert boot.asked_unbalanced == []


def test_a_case_without_control_runs_alone_in_every_round() -> None:
    boot = FakeBoot(reps=[2, 2], control=[False, True])
    assert boot.run("round-robin") == [(0, P), (1, P), (1, C), (0, P), (1, C), (1, P)]


@pytest.mark.parametrize("kind", ["round-robin", "random"])
def test_over_an_even_number_of_rounds_each_pass_goes_first_equally_often(
        kind: OrderKind) -> None:
    boot = FakeBoot(reps=[4, 4, 4], control=[True, True, True])
    runs = boot.run(kind, seed=11)
    first: dict[int, list[bool]] = {}  # case -> which pass went first, round by round
    for (case, control), second in zip(runs[0::2], runs[1::2], strict=True):
        assert second == (case, not control)  # a case's pair runs back to back
        first.setdefault(case, []).append(control)
    assert first == {case: [P, C, P, C] for case in range(3)}


def test_sequential_keeps_control_after_all_probed_repetitions() -> None:
    boot = FakeBoot(reps=[2, 2], control=[True, True])
    assert boot.run("sequential") == [(0, P), (0, P), (0, C), (0, C),
                                      (1, P), (1, P), (1, C), (1, C)]
    assert boot.rounds == [[0], [0], [1], [1]]
