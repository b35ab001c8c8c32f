"""Scenario files: YAML validated into typed objects, expanded by the matrix into cases.

Everything a user can get wrong is caught here, before any module is built or VM booted, and
reported as one line naming the file, the key path and what was expected. The sections' models
(unicast, multicast, dump, capacity, ...) are in nlperf/scenario_sections.py.
"""

from __future__ import annotations

import copy
import itertools
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nlperf.errors import BadInput
from nlperf.models import OrderKind
from nlperf.scenario_sections import AutoRepetitions as AutoRepetitions
from nlperf.scenario_sections import Capacity as Capacity
from nlperf.scenario_sections import Dump as Dump
from nlperf.scenario_sections import Group as Group
from nlperf.scenario_sections import Groups as Groups
from nlperf.scenario_sections import Module as Module
from nlperf.scenario_sections import Multicast as Multicast
from nlperf.scenario_sections import Probes as Probes
from nlperf.scenario_sections import Receivers as Receivers
from nlperf.scenario_sections import Repetitions as Repetitions
from nlperf.scenario_sections import Strict as Strict
from nlperf.scenario_sections import Unicast as Unicast
from nlperf.scenario_sections import Warmup as Warmup

# keys that hold for the whole run: a matrix cannot vary them
RUN_WIDE_KEYS = ("matrix", "name", "order", "seed", "capacity")


class Scenario(Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    target: Literal["auto", "host", "vm"] = "auto"
    kernel: str | None = None
    repetitions: Repetitions = 1
    order: OrderKind = Field(
        "round-robin", description="how the case x repetition runs of one boot are ordered")
    seed: int | None = Field(None, ge=0, le=2**63 - 1,
                             description="order random: the shuffle's seed (default: drawn)")
    traffic: Literal["both", "unicast", "multicast", "dump"] = Field(
        "both", description="which of the unicast, multicast (both: the two) and dump "
                            "sections a case drives")
    warmup: Warmup = Warmup()
    module: Module = Module()
    unicast: Unicast | None = None
    multicast: Multicast | None = None
    dump: Dump | None = None
    probes: Probes = Probes()
    capacity: Capacity | None = None
    matrix: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("repetitions", mode="before")
    @classmethod
    def _auto_defaults(cls, value: Any) -> Any:
        return {} if value == "auto" else value

    @field_validator("seed")
    @classmethod
    def _seed_for_random(cls, seed: int | None, info: ValidationInfo) -> int | None:
        if seed is not None and info.data.get("order") != "random":
            raise ValueError("applies to order random only")
        return seed

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        if self.traffic == "dump":
            if self.dump is None:
                raise ValueError("traffic dump needs a dump section")
            return self
        if self.unicast is None and self.multicast is None and not any(
                k.startswith(("unicast", "multicast")) for k in self.matrix):
            raise ValueError("needs a unicast or a multicast section (or traffic dump)")
        if self.traffic == "unicast" and self.unicast is None:
            raise ValueError("traffic unicast needs a unicast section")
        if self.traffic == "multicast" and self.multicast is None:
            raise ValueError("traffic multicast needs a multicast section")
        if self.capacity is not None:
            m = self.active_multicast
            if m is None or m.source != "generator":
                raise ValueError("capacity needs a multicast section with source generator "
                                 "(kernel → user: the sender is not the bottleneck)")
        return self

    @property
    def auto(self) -> AutoRepetitions | None:
        """The adaptive rule, or None for a fixed number of repetitions."""
        return self.repetitions if isinstance(self.repetitions, AutoRepetitions) else None

    @property
    def first_repetitions(self) -> int:
        """Repetitions every case gets before the adaptive rule (if any) has its say."""
        return self.repetitions.min if isinstance(self.repetitions, AutoRepetitions) \
            else self.repetitions

    @property
    def active_unicast(self) -> Unicast | None:
        return self.unicast if self.traffic in ("both", "unicast") else None

    @property
    def active_multicast(self) -> Multicast | None:
        return self.multicast if self.traffic in ("both", "multicast") else None

    @property
    def active_dump(self) -> Dump | None:
        return self.dump if self.traffic == "dump" else None


class Case(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: str
    params: dict[str, Any]
    scenario: Scenario


def _fmt_loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<top>"


def _one_line(e: ValidationError) -> str:
    err = e.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")
    loc = tuple(err["loc"])
    if loc[:1] == ("repetitions",) and loc[1:2] in (("count",), ("auto",)):
        loc = loc[:1] + loc[2:]  # the union's branch tag is not a key
        if err["type"] in ("int_type", "int_parsing", "int_from_float"):
            msg = "expected a whole number 1..1000, auto, or a mapping of min, max, " \
                  f"target_ci_pct, got {err['input']!r}"
            err = {**err, "type": "value_error"}
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "literal_error":
        msg = f"expected {err['ctx']['expected']}, got {err['input']!r}"
    elif "input" in err and err["type"] not in ("missing", "value_error"):
        msg = f"{msg}, got {err['input']!r}"
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return f"{_fmt_loc(loc)}: {msg}{more}"


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.0.c`` in nested dicts/lists; a missing section is created as a mapping."""
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise KeyError(key)
            idx = int(part)
            if last:
                node[idx] = value
            else:
                node = node[idx]
            continue
        if not isinstance(node, dict):
            raise KeyError(key)
        if last:
            node[part] = value
            continue
        if node.get(part) is None:
            # a section the file left out: a list when the key indexes into it
            nxt = parts[i + 1]
            node[part] = [{} for _ in range(int(nxt) + 1)] if nxt.isdigit() else {}
        node = node[part]


def _case_id(params: dict[str, Any]) -> str:
    if not params:
        return "default"
    parts = [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in params.items()]
    if len({p.split("=")[0] for p in parts}) < len(parts):
        parts = [f"{k}={v}" for k, v in params.items()]
    return re.sub(r"[^a-z0-9_.=,-]+", "-", ",".join(parts).lower())


def _known_key(key: str) -> bool:
    """Whether a dotted matrix key names a scenario field (list items by index)."""
    node: Any = Scenario
    for part in key.split("."):
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(part)
            if field is None:
                return False
            node = field.annotation
        elif typing.get_origin(node) is list and part.isdigit():
            node = typing.get_args(node)[0]
        else:
            return False
        # unwrap Optional[X]
        args = [a for a in typing.get_args(node) if a is not type(None)]
        if typing.get_origin(node) in (typing.Union, types.UnionType) and args:
            node = args[0]
    return True


def parse(data: Any, source: str = "<scenario>") -> Scenario:
    if not isinstance(data, dict):
        raise BadInput(f"{source}: expected a mapping at the top level, got "
                       f"{type(data).__name__}")
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise BadInput(f"{source}: {_one_line(e)}") from None


def _raw_with_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Sections a matrix key may point into exist even when the file left them out."""
    raw = copy.deepcopy(data)
    mc = raw.get("multicast")
    if isinstance(mc, dict) and "receivers" not in mc:
        mc["receivers"] = [{}]
    return raw


def expand(data: dict[str, Any], source: str = "<scenario>") -> tuple[Scenario, list[Case]]:
    """Validate every case the matrix makes from the file; the first case stands for the file.

    The file alone need not be complete: a matrix key may supply what a case needs (e.g.
    ``unicast.duration``), so each case is validated with its values applied.
    """
    matrix = data.get("matrix") or {}
    if not isinstance(matrix, dict) or not all(isinstance(k, str) for k in matrix):
        raise BadInput(f"{source}: matrix: expected a mapping of dotted keys to lists")
    if not matrix:
        base = parse(data, source)
        return base, [Case(id="default", params={}, scenario=base)]
    for key, values in matrix.items():
        if not isinstance(values, list) or not values:
            raise BadInput(f"{source}: matrix.{key}: expected a non-empty list of values")
        if key.split(".")[0] in RUN_WIDE_KEYS:
            raise BadInput(f"{source}: matrix.{key}: this key cannot vary")
        if not _known_key(key):
            raise BadInput(f"{source}: matrix.{key}: unknown key")
    keys = list(matrix)
    cases: list[Case] = []
    seen: set[str] = set()
    for combo in itertools.product(*(matrix[k] for k in keys)):
        raw = _raw_with_defaults(data)
        raw.pop("matrix", None)
        params = dict(zip(keys, combo, strict=True))
        for key, value in params.items():
            try:
                set_dotted(raw, key, value)
            except KeyError:
                raise BadInput(f"{source}: matrix.{key}: unknown key") from None
        try:
            scenario = Scenario.model_validate(raw)
        except ValidationError as e:
            where = ", ".join(f"{k}={v}" for k, v in params.items())
            raise BadInput(f"{source}: {_one_line(e)} (in the matrix case {where})") from None
        cid = _case_id(params)
        if cid in seen:
            raise BadInput(f"{source}: matrix: two cases share the id {cid!r}")
        seen.add(cid)
        cases.append(Case(id=cid, params=params, scenario=scenario))
    return cases[0].scenario.model_copy(update={"matrix": matrix}), cases


def load(path: Path) -> tuple[Scenario, list[Case], dict[str, Any]]:
    """Read, validate and expand a scenario file; returns the raw mapping too (for the copy)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BadInput(f"{path}: no such scenario file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: cannot read: {e.__class__.__name__}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise BadInput(f"{path}:{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a mapping at the top level, got "
                       f"{type(data).__name__}")
    base, cases = expand(data, str(path))
    return base, cases, data


def with_overrides(data: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """The raw scenario with command-line values (target, kernel) applied."""
    out = copy.deepcopy(data)
    for k, v in overrides.items():
        if v is not None:
            out[k] = v
    return out
