"""nlperf/design.py's schedule, driven as nlperf/cases.py drives it, without running anything.

A fake boot counts each case's probed and control runs as the schedule hands them out; a
case wants another (probed) repetition until it has its ``reps`` — what ``repetitions: auto``
does when cases stop at different counts.
"""

from __future__ import annotations

import itertools
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
    load: list[str] | None = None  # each case's load group (None: a group each)
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
        load = self.load
        for planned in design.schedule(
                kind, len(self.reps), wants_more=self.wants_more,
                has_control=lambda i: self.control[i], done=lambda i: self.probed_runs[i],
                on_round=self.rounds.append, rng=random.Random(seed),
                load_key=(lambda i: load[i]) if load else (lambda i: i)):
            out.append((planned.case, planned.control))
            if planned.control:
                self.control_runs[planned.case] += 1
            else:
                self.probed_runs[planned.case] += 1
        return out


def _rounds(runs: list[tuple[int, bool]], per_round: int) -> list[list[tuple[int, bool]]]:
    return [runs[i:i + per_round] for i in range(0, len(runs), per_round)]


def test_a_load_group_runs_its_probed_runs_together_and_alternates_with_its_neighbours() -> None:
    """Cases 0 and 1 share a load, 2 and 3 another: the probes change once per group (a
    detach costs ~1 s), and each group alternates which pass goes first from round to round."""
    boot = FakeBoot(reps=[2] * 4, control=[True] * 4, load=["x", "x", "y", "y"])
    assert _rounds(boot.run("round-robin"), 8) == [
        [(0, P), (1, P), (0, C), (1, C), (2, C), (3, C), (2, P), (3, P)],
        [(0, C), (1, C), (0, P), (1, P), (2, P), (3, P), (2, C), (3, C)]]
    assert boot.probed_runs == boot.control_runs == [2] * 4


def test_round_robin_alternates_which_pass_goes_first_case_by_case_and_round_by_round() -> None:
    boot = FakeBoot(reps=[3, 3], control=[True, True])
    assert boot.run("round-robin") == [
        (0, P), (0, C), (1, C), (1, P),  # round 0
        (0, C), (0, P), (1, P), (1, C),  # round 1
        (0, P), (0, C), (1, C), (1, P)]  # round 2
    assert boot.rounds == [[0, 1]] * 3
    assert boot.probed_runs == boot.control_runs == [3, 3]


def test_random_keeps_each_groups_alternation_whatever_the_cases_order_in_the_round() -> None:
    # random.Random(3) shuffles [0, 1] into [1, 0], [1, 0], [0, 1]
    boot = FakeBoot(reps=[3, 3], control=[True, True])
    assert boot.run("random", seed=3) == [
        (1, C), (1, P), (0, P), (0, C),
        (1, P), (1, C), (0, C), (0, P),
        (0, P), (0, C), (1, C), (1, P)]
    assert boot.rounds == [[1, 0], [1, 0], [0, 1]]


def test_repetitions_auto_a_control_that_goes_first_always_gets_its_probed_partner() -> None:
    # case 0 is done after 2 repetitions, case 1 after 4: rounds 2 and 3 are case 1's alone
    boot = FakeBoot(reps=[2, 4], control=[True, True])
    assert boot.run("round-robin") == [
        (0, P), (0, C), (1, C), (1, P),
        (0, C), (0, P), (1, P), (1, C),
        (1, C), (1, P),
        (1, P), (1, C)]
    assert boot.rounds == [[0, 1], [0, 1], [1], [1]]
    # no control repetition without its probed one, none extra, and the stopping rule is
    # only ever asked between rounds, never after a control run that went first
    assert boot.probed_runs == boot.control_runs == [2, 4]
    assert boot.asked_unbalanced == []


def test_a_case_without_control_runs_alone_in_every_round() -> None:
    boot = FakeBoot(reps=[2, 2], control=[False, True])
    assert boot.run("round-robin") == [(0, P), (1, C), (1, P), (0, P), (1, P), (1, C)]


@pytest.mark.parametrize("kind", ["round-robin", "random"])
def test_over_an_even_number_of_rounds_each_pass_goes_first_equally_often(
        kind: OrderKind) -> None:
    boot = FakeBoot(reps=[4] * 6, control=[True] * 6, load=["a", "a", "b", "b", "c", "c"])
    runs = boot.run(kind, seed=11)
    first: dict[int, list[bool]] = {}  # case -> which pass went first, round by round
    switches = []
    for one_round in _rounds(runs, 12):
        seen: set[int] = set()
        for case, control in one_round:
            if case not in seen:
                first.setdefault(case, []).append(control)
                seen.add(case)
        switches.append(sum(a[1] != b[1] for a, b in itertools.pairwise(one_round)))
    assert {case: sorted(f) for case, f in first.items()} == {case: [P, P, C, C]
                                                              for case in range(6)}
    assert all(f[::2] == [f[0]] * 2 and f[1::2] == [not f[0]] * 2 for f in first.values())
    if kind == "round-robin":  # the probes change once per load group, never more
        assert switches == [3, 3, 3, 3]


def test_sequential_keeps_control_after_all_probed_repetitions() -> None:
    boot = FakeBoot(reps=[2, 2], control=[True, True])
    assert boot.run("sequential") == [(0, P), (0, P), (0, C), (0, C),
                                      (1, P), (1, P), (1, C), (1, C)]
    assert boot.rounds == [[0], [0], [1], [1]]
