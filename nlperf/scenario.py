"""Scenario files: YAML validated into typed objects, expanded by the matrix into cases.

Everything a user can get wrong is caught here, before any module is built or VM booted, and
reported as one line naming the file, the key path and what was expected.
"""

from __future__ import annotations

import copy
import itertools
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nlperf import kmod, probes, wire
from nlperf.errors import BadInput
from nlperf.models import OrderKind

Group = Annotated[int, Field(ge=1, le=wire.MAX_GROUPS)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Warmup(Strict):
    """Discarded traffic before measuring: a message count or seconds (not both)."""

    messages: int = Field(100, ge=0)
    seconds: float | None = Field(None, ge=0, le=600)


def _module_param(name: str) -> Any:
    """A module parameter's default and bounds, from its one definition (kmod.PARAMS)."""
    param = kmod.PARAMS[name]
    if param.kind is int:
        return Field(param.default, ge=param.lo, le=param.hi)
    return Field(param.default)


class Module(Strict):
    # one key per module parameter, bounds and defaults from kmod.PARAMS (a test holds them equal)
    mode: Literal[kmod.PARAMS["mode"].choices] = _module_param("mode")  # type: ignore[valid-type]
    proto: int = _module_param("proto")
    queue_len: int = _module_param("queue_len")
    queue_bytes: int = _module_param("queue_bytes")
    work_ns: int = _module_param("work_ns")
    work_sleep_us: int = _module_param("work_sleep_us")
    allow_unpriv: bool = _module_param("allow_unpriv")


class Unicast(Strict):
    senders: int = Field(1, ge=1, le=64)
    message_size: int = Field(64, ge=wire.STAMP.size, le=65536,
                              description="payload bytes, >= the stamp")
    kind: Literal["timed", "raw", "sink"] = "timed"
    pattern: Literal["closed", "open"] = "closed"
    window: int = Field(1, ge=1, le=65536, description="closed loop: messages in flight")
    rate: float | None = Field(None, gt=0, description="open loop: messages/s per sender")
    batch: int = Field(1, ge=1, le=1024, description="messages per datagram")
    coalesce: bool = Field(False, description=(
        "open loop: ask for each datagram's echo replies in one datagram (NLPERF_F_COALESCE)"))
    count: int | None = Field(None, ge=1, le=100_000_000)
    duration: float | None = Field(None, gt=0, le=86400, description="seconds")
    reply_timeout_ms: int = Field(1000, ge=1, le=600_000)
    cpus: list[int] | None = None

    @model_validator(mode="after")
    def _check(self) -> Unicast:
        if (self.count is None) == (self.duration is None):
            raise ValueError("set exactly one of count or duration")
        if self.pattern == "open" and self.rate is None:
            raise ValueError("pattern open needs rate (messages/s)")
        if self.pattern == "closed" and self.rate is not None:
            raise ValueError("rate applies to pattern open only")
        if self.coalesce and (self.pattern != "open" or self.kind == "sink"):
            raise ValueError("coalesce applies to pattern open with echo replies only "
                             "(the closed loops read one reply per recv)")
        return self


def _unique_groups(groups: list[int]) -> list[int]:
    if len(set(groups)) != len(groups):
        raise ValueError(f"groups listed twice in {groups}")
    return groups


Groups = Annotated[list[Group], Field(min_length=1), AfterValidator(_unique_groups)]


class Receivers(Strict):
    count: int = Field(1, ge=1, le=256)
    groups: Groups = Field(default_factory=lambda: [1])
    rcvbuf: int | None = Field(None, ge=1024, le=1 << 30, description="bytes (SO_RCVBUF)")
    delay_us: int = Field(0, ge=0, le=1_000_000, description="sleep per message")
    no_enobufs: bool = False
    broadcast_error: bool = False


class Multicast(Strict):
    source: Literal["relay", "generator"] = "generator"
    groups: Groups = Field(default_factory=lambda: [1])
    receivers: list[Receivers] = Field(default_factory=lambda: [Receivers()], min_length=1)
    size: int = Field(64, ge=wire.STAMP.size, le=65536,
                      description="payload bytes per message")
    rate: float = Field(0, ge=0, description="messages/s per group, 0: as fast as possible")
    count: int | None = Field(None, ge=1, le=100_000_000, description="messages per group")
    duration: float | None = Field(None, gt=0, le=86400, description="seconds")
    alloc: Literal["kernel", "atomic"] = "kernel"
    drain_timeout_ms: int = Field(2000, ge=10, le=600_000)

    @model_validator(mode="after")
    def _check(self) -> Multicast:
        if (self.count is None) == (self.duration is None):
            raise ValueError("set exactly one of count or duration")
        joined = {g for r in self.receivers for g in r.groups}
        if not joined & set(self.groups):
            raise ValueError("no receiver joins any of the groups sent to")
        return self


class Dump(Strict):
    """Dumps of ``objects`` synthetic objects (NLPERF_MSG_DUMP_GET), read to NLMSG_DONE."""

    objects: int = Field(1000, ge=0, le=wire.DUMP_OBJECTS_MAX)
    object_size: int = Field(64, ge=wire.DUMP_OBJ.size, le=wire.DUMP_SIZE_MAX,
                             description="payload bytes per object message")
    rcvbuf: int | None = Field(None, ge=1024, le=1 << 30, description="bytes (SO_RCVBUF)")
    # the kernel fills a dump datagram up to the reader's largest recv (at least one page's
    # worth): a smaller buffer would cut datagrams short
    recv_size: int = Field(32768, ge=4096, le=1 << 20, description="bytes per recv")
    dumps: int = Field(10, ge=1, le=1_000_000, description="dumps per repetition")
    interrupt_after: int = Field(0, ge=0, description=(
        "0: never; k: the table changes after object k of each dump (NLM_F_DUMP_INTR)"))

    @model_validator(mode="after")
    def _check(self) -> Dump:
        if self.interrupt_after > self.objects:
            raise ValueError(f"interrupt_after ({self.interrupt_after}) is beyond objects "
                             f"({self.objects})")
        return self


class Capacity(Strict):
    """A knee search (nlperf/capacity.py): per receiver cost × rcvbuf × no_enobufs, the highest
    generator rate at which a probe burst of ``messages`` loses nothing."""

    delay_us: list[Annotated[int, Field(ge=0, le=1_000_000)]] = Field(
        default_factory=lambda: [0], min_length=1, description="receiver cost: sleep/message")
    rcvbuf: list[Annotated[int, Field(ge=1024, le=1 << 30)]] = Field(
        default_factory=lambda: [212992], min_length=1, description="bytes (SO_RCVBUFFORCE)")
    no_enobufs: list[bool] = Field(default_factory=lambda: [False], min_length=1)
    rates: Annotated[list[Annotated[float, Field(gt=0, le=10_000_000)]],
                     Field(min_length=2, max_length=2)] = Field(
        default_factory=lambda: [1000.0, 200000.0], description="[lo, hi] messages/s")
    resolution: float = Field(1.1, gt=1, le=10, description="stop when hi/lo < this")
    max_steps: int = Field(8, ge=1, le=64, description="bisection probes per series at most")
    messages: int = Field(2000, ge=1, le=10_000_000, description="messages per probe run")
    confirm: int = Field(2, ge=0, le=100, description="extra zero-loss runs at the knee")
    sizes: list[Annotated[int, Field(ge=wire.STAMP.size, le=65536)]] = Field(
        default_factory=lambda: [64, 256, 1024], min_length=1,
        description="payload sizes whose queued charge (truesize) is measured")
    truesize_messages: int = Field(64, ge=1, le=4096, description="queued per truesize reading")

    @model_validator(mode="after")
    def _check(self) -> Capacity:
        if self.rates[0] >= self.rates[1]:
            raise ValueError(f"rates: lo ({self.rates[0]:g}) must be below hi "
                             f"({self.rates[1]:g})")
        return self


class Probes(Strict):
    enabled: bool = True
    timing: bool = Field(True, description="per-call durations; false: counters only (cheap)")
    which: list[Literal[probes.WHICH]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(probes.WHICH))
    control: bool = True


class AutoRepetitions(Strict):
    """``repetitions: auto``: rounds are added until every headline metric's CI is narrow enough.

    After ``min`` repetitions of every case, a case still short of the target gets one more
    repetition per round until each of its headline metrics has a bootstrap CI half-width
    (nlperf.stats.ci_halfwidth_pct over the per-repetition values) ≤ ``target_ci_pct`` % or
    it has ``max`` repetitions.
    """

    min: int = Field(3, ge=2, le=1000, description="a CI needs two repetitions")
    max: int = Field(10, ge=2, le=1000)
    target_ci_pct: float = Field(5.0, gt=0, le=100, description="% of the estimate")

    @model_validator(mode="after")
    def _check(self) -> AutoRepetitions:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self


def _repetitions_kind(value: Any) -> str:
    return "auto" if isinstance(value, dict | AutoRepetitions) else "count"


# a whole number, or (``auto`` / a mapping) the adaptive rule; tags keep errors to one branch
Repetitions = Annotated[
    Annotated[Annotated[int, Field(ge=1, le=1000)], Tag("count")]
    | Annotated[AutoRepetitions, Tag("auto")],
    Discriminator(_repetitions_kind)]
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
