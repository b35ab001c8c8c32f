"""Scenario files: loading, matrix expansion and one-line errors for every broken input."""

from __future__ import annotations

import math
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from nlperf import kmod, scenario
from nlperf.errors import EXIT_BAD_INPUT, BadInput

SCENARIOS = sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.yaml"))


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def bad(path: Path) -> str:
    """The one-line message load() refuses ``path`` with."""
    with pytest.raises(BadInput) as info:
        scenario.load(path)
    err = info.value
    assert err.exit_code == EXIT_BAD_INPUT == 2
    msg = str(err)
    assert "\n" not in msg, f"not one line: {msg!r}"
    assert msg.startswith(str(path)), f"does not name the file first: {msg!r}"
    return msg


# --- shipped scenarios ------------------------------------------------------------------------


def test_there_are_shipped_scenarios() -> None:
    assert any(p.name == "smoke.yaml" for p in SCENARIOS)


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_shipped_scenario_loads(path: Path) -> None:
    base, cases, raw = scenario.load(path)
    assert cases, "no cases"
    ids = [c.id for c in cases]
    assert len(set(ids)) == len(ids), f"duplicate case ids: {ids}"
    assert base.name == raw["name"]
    matrix = raw.get("matrix") or {}
    # the matrix is a full cartesian product of the lists written in the file
    assert len(cases) == math.prod(len(v) for v in matrix.values())
    for case in cases:
        assert set(case.params) == set(matrix)
        assert case.scenario.name == base.name
        assert "matrix" not in case.scenario.model_fields_set
    # every combination appears exactly once
    combos = {tuple(repr(c.params[k]) for k in matrix) for c in cases}
    assert len(combos) == len(cases)
    # loading again gives the same ids in the same order
    assert [c.id for c in scenario.load(path)[1]] == ids


def test_smoke_values_reach_the_model() -> None:
    smoke = next(p for p in SCENARIOS if p.name == "smoke.yaml")
    raw = yaml.safe_load(smoke.read_text())
    _, cases, _ = scenario.load(smoke)
    assert [c.id for c in cases] == ["default"]
    u = cases[0].scenario.unicast
    assert u is not None
    assert u.count == raw["unicast"]["count"]
    assert u.message_size == raw["unicast"]["message_size"]
    assert cases[0].scenario.module.mode == raw["module"]["mode"]


# --- repetitions and order --------------------------------------------------------------------


@pytest.mark.parametrize(("value", "first", "rule"), [
    (5, 5, None),
    ("auto", 3, {"min": 3, "max": 10, "target_ci_pct": 5.0}),
    ({"min": 5, "target_ci_pct": 2.5}, 5, {"min": 5, "max": 10, "target_ci_pct": 2.5}),
    ({"min": 4, "max": 4}, 4, {"min": 4, "max": 4, "target_ci_pct": 5.0}),
])
def test_repetitions_fixed_or_auto(value: object, first: int, rule: dict[str, Any] | None
                                   ) -> None:
    s = scenario.parse({**BASE, "repetitions": value})
    assert s.first_repetitions == first
    assert (s.auto.model_dump() if s.auto is not None else None) == rule


def test_order_defaults_to_round_robin_and_takes_a_seed_for_random() -> None:
    s = scenario.parse(BASE)
    assert (s.order, s.seed, s.repetitions) == ("round-robin", None, 1)
    s = scenario.parse({**BASE, "order": "random", "seed": 42})
    assert (s.order, s.seed) == ("random", 42)
    assert scenario.parse({**BASE, "order": "sequential"}).order == "sequential"


# --- matrix ------------------------------------------------------------------------------------

BASE: dict[str, Any] = {"name": "m", "unicast": {"count": 10}}


def test_matrix_is_cartesian_product_with_values_applied() -> None:
    data = {**BASE, "matrix": {"module.mode": ["callback", "kthread", "workqueue"],
                               "unicast.window": [1, 8],
                               "unicast.message_size": [64, 256]}}
    _, cases = scenario.expand(data)
    assert len(cases) == 3 * 2 * 2
    seen = set()
    for c in cases:
        s = c.scenario
        assert s.unicast is not None
        got = (s.module.mode, s.unicast.window, s.unicast.message_size)
        assert got == (c.params["module.mode"], c.params["unicast.window"],
                       c.params["unicast.message_size"])
        assert s.unicast.count == 10  # untouched keys keep the file's value
        seen.add(got)
    assert len(seen) == 12
    ids = [c.id for c in cases]
    assert len(set(ids)) == 12
    assert all(i == i.lower() and " " not in i for i in ids)


def test_matrix_ids_stable_across_loads(tmp_path: Path) -> None:
    p = write(tmp_path, yaml.safe_dump(
        {**BASE, "matrix": {"unicast.window": [4, 1, 2], "module.work_ns": [0, 20000]}},
        sort_keys=False))
    first = [(c.id, c.params) for c in scenario.load(p)[1]]
    second = [(c.id, c.params) for c in scenario.load(p)[1]]
    assert first == second
    # the order follows the file: first key outermost, values in the order written
    assert [c[1]["unicast.window"] for c in first] == [4, 4, 1, 1, 2, 2]


def test_matrix_does_not_mutate_input() -> None:
    data = {"name": "m", "multicast": {"count": 5},
            "matrix": {"multicast.receivers.0.count": [1, 2]}}
    before = yaml.safe_dump(data)
    scenario.expand(data)
    assert yaml.safe_dump(data) == before


def test_matrix_same_leaf_name_gets_distinct_ids() -> None:
    data = {"name": "m", "unicast": {"count": 1}, "multicast": {"count": 1},
            "matrix": {"unicast.count": [1, 2], "multicast.count": [1, 2]}}
    _, cases = scenario.expand(data)
    ids = [c.id for c in cases]
    assert len(ids) == 4 and len(set(ids)) == 4


def test_dotted_key_into_list_item() -> None:
    data = {"name": "m", "multicast": {"count": 5, "groups": [1, 2], "receivers": [
        {"count": 1, "groups": [1]}, {"count": 3, "groups": [2], "rcvbuf": 65536}]},
        "matrix": {"multicast.receivers.1.count": [2, 7]}}
    _, cases = scenario.expand(data)
    assert len(cases) == 2
    for c, want in zip(cases, [2, 7], strict=True):
        m = c.scenario.multicast
        assert m is not None
        assert m.receivers[1].count == want
        assert m.receivers[1].rcvbuf == 65536  # the rest of the item is kept
        assert m.receivers[0].count == 1


def test_dotted_key_into_default_receivers() -> None:
    """A file that leaves receivers to the default can still vary receivers.0.count."""
    data = {"name": "m", "multicast": {"count": 5},
            "matrix": {"multicast.receivers.0.count": [1, 4, 16]}}
    _, cases = scenario.expand(data)
    counts = []
    for c in cases:
        assert c.scenario.multicast is not None
        counts.append(c.scenario.multicast.receivers[0].count)
    assert counts == [1, 4, 16]


def test_dotted_key_into_list_of_section_created_by_matrix() -> None:
    # Scenario._check accepts a file without a multicast section when matrix keys supply it,
    # and _known_key accepts multicast.receivers.0.count; so the cases must validate.
    data = {"name": "m", "matrix": {"multicast.count": [10],
                                    "multicast.receivers.0.count": [1, 2]}}
    _, cases = scenario.expand(data)
    assert [c.scenario.multicast.receivers[0].count for c in cases  # type: ignore[union-attr]
            ] == [1, 2]


def test_matrix_can_supply_a_whole_section() -> None:
    data = {"name": "m", "matrix": {"unicast.count": [1, 2]}}
    _, cases = scenario.expand(data)
    assert [c.scenario.unicast.count for c in cases] == [1, 2]  # type: ignore[union-attr]


def test_matrix_can_supply_count_of_a_present_section() -> None:
    data = {"name": "m", "unicast": {"window": 4}, "matrix": {"unicast.duration": [1.0, 5.0]}}
    _, cases = scenario.expand(data)
    assert [c.scenario.unicast.duration for c in cases] == [1.0, 5.0]  # type: ignore[union-attr]


def test_set_dotted() -> None:
    d: dict[str, Any] = {"a": {"b": [{"c": 1}, {"c": 2}]}}
    scenario.set_dotted(d, "a.b.1.c", 9)
    scenario.set_dotted(d, "x.y", 3)
    assert d == {"a": {"b": [{"c": 1}, {"c": 9}]}, "x": {"y": 3}}
    with pytest.raises(KeyError):
        scenario.set_dotted(d, "a.b.2.c", 1)
    with pytest.raises(KeyError):
        scenario.set_dotted(d, "a.b.first.c", 1)
    with pytest.raises(KeyError):
        scenario.set_dotted(d, "x.y.z", 1)


# --- the module section is kmod.PARAMS --------------------------------------------------------


def test_module_section_takes_names_defaults_and_bounds_from_kmod_params() -> None:
    fields = scenario.Module.model_fields
    assert set(fields) == set(kmod.PARAMS)
    for name, param in kmod.PARAMS.items():
        assert fields[name].default == param.default, name
        if param.kind is int:
            bounds = {type(m).__name__: m for m in fields[name].metadata}
            assert (bounds["Ge"].ge, bounds["Le"].le) == (param.lo, param.hi), name
    assert typing.get_args(fields["mode"].annotation) == kmod.PARAMS["mode"].choices


@pytest.mark.parametrize("name", [n for n, p in kmod.PARAMS.items() if p.kind is int])
def test_module_bounds_are_enforced_at_both_ends(name: str) -> None:
    param = kmod.PARAMS[name]
    for value in (param.lo, param.hi):
        assert getattr(scenario.parse({**BASE, "module": {name: value}}).module, name) == value
    for value in (param.lo - 1, param.hi + 1):
        with pytest.raises(BadInput, match=f"module.{name}"):
            scenario.parse({**BASE, "module": {name: value}})


# --- one-line errors ---------------------------------------------------------------------------

OK_UNICAST = "name: s\nunicast: {count: 10}\n"

# (file text, fragments the message must contain: the key path and what was expected)
BROKEN: dict[str, tuple[str, list[str]]] = {
    "unknown-top-key": (OK_UNICAST + "colour: red\n", ["colour", "unknown key"]),
    "unknown-nested-key": ("name: s\nunicast: {count: 10, windw: 2}\n",
                           ["unicast.windw", "unknown key"]),
    "wrong-type": ("name: s\nunicast: {count: many}\n", ["unicast.count", "integer", "many"]),
    "section-not-mapping": ("name: s\nunicast: 5\n", ["unicast", "5"]),
    "coalesce-closed-loop": ("name: s\nunicast: {count: 10, batch: 8, coalesce: true}\n",
                             ["unicast", "coalesce applies to pattern open"]),
    "message-size-too-small": ("name: s\nunicast: {count: 1, message_size: 10}\n",
                               ["unicast.message_size", "48", "10"]),
    "module-mode": (OK_UNICAST + "module: {mode: foo}\n",
                    ["module.mode", "callback", "kthread", "workqueue", "foo"]),
    "group-33": ("name: s\nmulticast: {count: 1, groups: [33]}\n",
                 ["multicast.groups.0", "32", "33"]),
    "receiver-group-0": ("name: s\nmulticast: {count: 1, receivers: [{groups: [0]}]}\n",
                         ["multicast.receivers.0.groups.0", "1", "0"]),
    "count-and-duration": ("name: s\nunicast: {count: 1, duration: 2}\n",
                           ["unicast", "count", "duration"]),
    "neither-count-nor-duration": ("name: s\nunicast: {window: 2}\n",
                                   ["unicast", "count", "duration"]),
    "multicast-neither": ("name: s\nmulticast: {groups: [1]}\n",
                          ["multicast", "count", "duration"]),
    "open-loop-without-rate": ("name: s\nunicast: {count: 1, pattern: open}\n",
                               ["unicast", "rate"]),
    "empty-matrix-list": (OK_UNICAST + "matrix: {unicast.window: []}\n",
                          ["matrix.unicast.window", "non-empty"]),
    "unknown-matrix-key": (OK_UNICAST + "matrix: {unicast.wndow: [1, 2]}\n",
                           ["matrix.unicast.wndow", "unknown key"]),
    "matrix-index-out-of-range": ("name: s\nmulticast: {count: 1}\n"
                                  "matrix: {multicast.receivers.3.count: [1, 2]}\n",
                                  ["matrix.multicast.receivers.3.count", "unknown key"]),
    "matrix-value-not-list": (OK_UNICAST + "matrix: {unicast.window: 4}\n",
                              ["matrix.unicast.window", "list"]),
    "matrix-bad-value": (OK_UNICAST + "matrix: {unicast.window: [1, 0]}\n",
                         ["unicast.window", "1", "0"]),
    "matrix-name": (OK_UNICAST + "matrix: {name: [a, b]}\n", ["matrix.name"]),
    "missing-name": ("unicast: {count: 1}\n", ["name"]),
    "no-traffic-section": ("name: s\n", ["unicast", "multicast"]),
    "no-receiver-on-sent-group": ("name: s\nmulticast: {count: 1, groups: [2], "
                                  "receivers: [{groups: [1]}]}\n", ["multicast", "group"]),
    "repetitions-zero": (OK_UNICAST + "repetitions: 0\n", ["repetitions:", "1", "0"]),
    "repetitions-word": (OK_UNICAST + "repetitions: many\n",
                         ["repetitions:", "auto", "min, max, target_ci_pct", "'many'"]),
    "repetitions-fraction": (OK_UNICAST + "repetitions: 2.5\n",
                             ["repetitions:", "whole number", "2.5"]),
    "repetitions-auto-unknown-key": (OK_UNICAST + "repetitions: {mni: 3}\n",
                                     ["repetitions.mni", "unknown key"]),
    "repetitions-auto-min-1": (OK_UNICAST + "repetitions: {min: 1}\n",
                               ["repetitions.min", "2", "1"]),
    "repetitions-auto-max-below-min": (OK_UNICAST + "repetitions: {min: 5, max: 4}\n",
                                       ["repetitions", "max (4) is below min (5)"]),
    "repetitions-auto-target-0": (OK_UNICAST + "repetitions: {target_ci_pct: 0}\n",
                                  ["repetitions.target_ci_pct", "0"]),
    "order-unknown": (OK_UNICAST + "order: shuffled\n",
                      ["order", "round-robin", "random", "sequential", "shuffled"]),
    "seed-without-random": (OK_UNICAST + "seed: 3\n", ["seed: applies to order random only"]),
    "seed-negative": (OK_UNICAST + "order: random\nseed: -1\n", ["seed", "0", "-1"]),
    "matrix-order": (OK_UNICAST + "matrix: {order: [random, sequential]}\n",
                     ["matrix.order", "cannot vary"]),
    "matrix-seed": (OK_UNICAST + "order: random\nmatrix: {seed: [1, 2]}\n",
                    ["matrix.seed", "cannot vary"]),
}


@pytest.mark.parametrize("text,fragments", list(BROKEN.values()), ids=list(BROKEN))
def test_broken_input_is_one_line(tmp_path: Path, text: str, fragments: list[str]) -> None:
    msg = bad(write(tmp_path, text))
    rest = msg[len(str(tmp_path)):]
    for f in fragments:
        assert f in rest, f"{f!r} missing from {msg!r}"
    assert "Traceback" not in msg and "pydantic" not in msg.lower()


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    p = write(tmp_path, "name: s\nunicast:\n  count: 10\n  window: [1, 2\nprobes: {}\n")
    msg = bad(p)
    assert "invalid YAML" in msg
    # the error is detected on line 5 (the unclosed flow list runs into it)
    assert "line 5" in msg


def test_yaml_tab_indent_names_line(tmp_path: Path) -> None:
    msg = bad(write(tmp_path, "name: s\nunicast:\n\tcount: 1\n"))
    assert "line 3" in msg and "invalid YAML" in msg


@pytest.mark.parametrize("text,kind", [("- a\n- b\n", "list"), ("just words\n", "str"),
                                       ("", "NoneType"), ("42\n", "int")])
def test_top_level_not_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    msg = bad(write(tmp_path, text))
    assert "mapping" in msg and kind in msg


def test_parse_rejects_non_mapping_and_names_source() -> None:
    with pytest.raises(BadInput, match=r"^here: expected a mapping"):
        scenario.parse([1, 2], "here")
    with pytest.raises(BadInput, match=r"^there: unicast.count"):
        scenario.parse({"name": "x", "unicast": {"count": 0}}, "there")


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.yaml"
    msg = bad(p)
    assert "no such" in msg


def test_directory_instead_of_file(tmp_path: Path) -> None:
    d = tmp_path / "dir.yaml"
    d.mkdir()
    msg = bad(d)
    assert "read" in msg.lower() or "directory" in msg.lower()


def test_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"name: \xff\xfe\x00bad\n")
    bad(p)


def test_python_tags_are_refused(tmp_path: Path) -> None:
    msg = bad(write(tmp_path, "name: !!python/object/apply:os.getcwd []\nunicast: {count: 1}\n"))
    assert "invalid YAML" in msg


def test_many_errors_still_one_line(tmp_path: Path) -> None:
    text = "name: s\nunicast: {count: 0, window: 0, batch: 0, senders: 0}\n"
    msg = bad(write(tmp_path, text))
    assert "more" in msg


def test_duplicate_receiver_groups_not_double_counted() -> None:
    """A receiver that lists a group twice joins it once: it must not expect twice the sends.

    Either the scenario refuses the duplicate, or the loss accounting counts the group once.
    """
    from types import SimpleNamespace

    import numpy as np

    from nlperf.metrics import multicast_block

    data = {"name": "d", "multicast": {"count": 100, "groups": [1],
                                       "receivers": [{"groups": [1, 1]}]}}
    try:
        s = scenario.parse(data)
    except BadInput:
        return
    assert s.multicast is not None
    groups = s.multicast.receivers[0].groups
    r = SimpleNamespace(id="r0.0", groups=groups, received=101, enobufs=0, sk_drops=0,
                        seq_gaps=0, records=np.empty((0, 5), dtype=np.int64))
    block = multicast_block("generator", {1: 101}, [r])
    assert block["receivers"][0]["lost"] == 0
