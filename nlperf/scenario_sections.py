"""The sections of a scenario file (nlperf/scenario.py assembles them into a Scenario): one
typed, closed model per section, with its defaults, bounds and cross-key checks.

Kept apart from the file's top level, its parsing and its matrix expansion; nlperf/scenario.py
re-exports every name here, so ``scenario.Capacity`` and the like keep working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from nlperf import kmod, probes, wire

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
