"""The results contract as typed models: summary.json, env.json, and the host→VM hand-back.

One declaration: ``results/schema.json`` is generated from these classes
(``python -m nlperf.results --schema``) and a test checks the checked-in file against it.

A key that does not apply is absent, never ``null``: models are written with only the
fields that were set (``document()``), so a block is in a summary exactly when the code put it
there, and a summary read back is written again as the same document. ``Opt[T]`` marks such a
key; a plain ``T | None`` field is one whose value may be null (``finished``, ``sk_drops``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from nlperf import wire
from nlperf.model_base import Accel as Accel
from nlperf.model_base import CaseStatus as CaseStatus
from nlperf.model_base import Count as Count
from nlperf.model_base import McSource as McSource
from nlperf.model_base import Model as Model
from nlperf.model_base import OpenModel as OpenModel
from nlperf.model_base import Opt as Opt
from nlperf.model_base import OrderKind as OrderKind
from nlperf.model_base import Phases as Phases
from nlperf.model_base import Seconds as Seconds
from nlperf.model_base import Status as Status
from nlperf.model_base import Target as Target
from nlperf.models_capacity import Capacity as Capacity
from nlperf.models_capacity import CapacityPoint as CapacityPoint
from nlperf.models_capacity import CapacitySeries as CapacitySeries
from nlperf.models_capacity import Truesize as Truesize

# --- metric blocks ------------------------------------------------------------------------------


class Latency(Model):
    """Latency distribution; the unit is in the key that holds it (_us, _ns)."""

    count: Count
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    p999: float | None
    max: float | None


class Unicast(Model):
    """Request/reply traffic to the module: counts, rate, and latency with its stamp parts."""

    sent: Count
    received: Count
    errors: Count
    timeouts: Count = 0
    foreign: Count = 0
    throughput_per_s: Annotated[float, Field(ge=0)]
    elapsed_s: float = 0.0
    errnos: Opt[dict[str, int]] = None
    achieved_rate_per_s: Opt[float] = None
    max_backlog: Opt[int] = None
    # the senders' own receive queues: replies they dropped (each also a timeout), and with a
    # window, the kernel's charge for one queued reply and the queue size given for the window
    sk_drops: Opt[int] = None
    reply_truesize: Opt[int] = None
    rcvbuf: Opt[int] = None
    rtt_us: Latency
    user_to_kernel_us: Opt[Latency] = None
    queue_us: Opt[Latency] = None
    processing_us: Opt[Latency] = None
    kernel_to_user_us: Opt[Latency] = None


class Receiver(Model):
    """One multicast listener: what the module broadcast to its groups against what it got.

    ``lost = sent - received``; ``sk_drops`` (null when unknown) is the socket's own count.
    """

    id: str
    groups: list[Annotated[int, Field(ge=1, le=wire.MAX_GROUPS)]]
    sent: Count
    received: Count
    lost: int
    enobufs: Count
    seq_gaps: Count = 0
    foreign: Count = 0
    sk_drops: int | None
    latency_us: Latency


class SendSpacing(Model):
    """Achieved spacing of the source's multicast sends (ns): the kernel send stamp of a group's
    message seq+1 minus that of seq, for each such pair some receiver got (receivers of a group
    get the same stamped sends: each pair counts once; a lost message leaves its pairs out).
    Bursts show as p50 below the schedule's interval; null: no pair."""

    count: Count
    p50_ns: float | None
    p99_ns: float | None


class Multicast(Model):
    """Broadcasts by group (the module's count) and each receiver's view of them.

    With relays, ``relay_requested`` is what the relay sender asked for (end marker included)
    and ``relay_errors`` the requests the module refused (an error reply each: ENOBUFS when the
    deferred queue is full). A refused relay is never broadcast, so no receiver can count it
    lost: ``relay_requested − sent_by_group[g]`` is each group's share of them.
    ``send_spacing`` pools the groups' spacings, ``send_spacing_by_group`` has each group's.
    """

    source: McSource = "generator"
    sent_by_group: dict[str, int]
    receivers: list[Receiver]
    relay_requested: Opt[int] = None
    relay_errors: Opt[int] = None
    send_spacing: Opt[SendSpacing] = None
    send_spacing_by_group: Opt[dict[str, SendSpacing]] = None


class Dump(Model):
    """Dumps read to NLMSG_DONE (nlperf/workloads/dump.py); counts include the retries that
    NLM_F_DUMP_INTR asked for, ``duration_ns`` is per dump with its retries."""

    dumps: Count
    attempts: Count
    interrupted: Count
    retries: Count
    objects_read: Count
    recvs: Count
    bytes: Count
    elapsed_s: Seconds
    objects_per_s: Annotated[float, Field(ge=0)]
    bytes_per_s: Annotated[float, Field(ge=0)]
    msgs_per_recv: Annotated[float, Field(ge=0)]
    duration_ns: Latency


class CtxSwitches(Model):
    """Context switches (deltas over the measured window)."""

    voluntary: int = 0
    involuntary: int = 0


class Sched(Model):
    """Context switches of the lab's processes, summed per role."""

    senders: Opt[CtxSwitches] = None
    receivers: Opt[CtxSwitches] = None
    relay_sender: Opt[CtxSwitches] = None
    kthread: Opt[CtxSwitches] = None


class Module(OpenModel):
    """The module's counters (wire format ``nlperf_stats``, nlperf/wire.py names every key)."""

    mode: Opt[str] = None
    proto: Opt[int] = None
    queue_len: Opt[int] = None
    queue_hwm: Opt[int] = None
    received: Opt[int] = None
    processed: Opt[int] = None
    replied: Opt[int] = None
    groups: Opt[dict[str, dict[str, int]]] = None


class Overhead(Model):
    """The observer effect: the probed run against the probes-off control run, in percent.

    A key is present when both runs have the block; its value is null when either lacks data.
    """

    throughput_pct: float | None = None
    p50_pct: float | None = None
    multicast_latency_p50_pct: float | None = None


class Probes(OpenModel):
    """BCC probe results (nlperf/probes.py owns the other keys) and how each probe attached."""

    attach: dict[str, str] = Field(default_factory=dict)
    timing: Opt[bool] = None
    compile_s: Opt[float] = None
    attach_s: Opt[float] = None
    notes: Opt[list[str]] = None
    overhead: Opt[Overhead] = None
    nmissed: Opt[dict[str, Count | None]] = Field(None, description=(
        "kprobe fallback: returns each kretprobe missed since the last reset (those calls are "
        "not counted); null: unknown (attached without a tracefs event)"))


class PooledDirection(Model):
    """One direction of a netlink function's calls, summed over the probed repetitions."""

    calls: Count
    results: dict[str, Count]
    latency_ns: Opt[Latency] = None


class PooledCalls(Model):
    """A counted netlink function (``netlink_unicast``...) over the case's probed repetitions.

    Counts are sums; latencies come from the repetitions' histograms added bucket by bucket.
    """

    calls: Count
    results: dict[str, Count]
    by_direction: dict[str, PooledDirection]
    latency_ns: Opt[Latency] = None


class PooledTotal(Model):
    """A per-socket count (overruns, deliveries) summed over sockets and repetitions."""

    total: Count


class PooledSchedRole(Model):
    """Scheduler events of one role (lab processes, the module's kthread), summed."""

    voluntary: Count
    involuntary: Count
    wakeups: Count
    blocked_ns: Opt[Latency] = None
    wakeup_to_run_ns: Opt[Latency] = None


class PooledSched(Model):
    lab: Opt[PooledSchedRole] = None
    kthread: Opt[PooledSchedRole] = None
    workqueue: Latency | None = Field(None, description=(
        "null: not measured in some repetition (the work function's address was unknown)"))


class CaseProbes(Model):
    """A case's ``probes`` block: how each probe attached, the observer effect, and the
    repetitions' probe counters pooled (keys as in a repetition's block, per-process and
    per-socket detail left out: those differ from one repetition to the next)."""

    attach: dict[str, str] = Field(default_factory=dict)
    overhead: Opt[Overhead] = None
    netlink_unicast: Opt[PooledCalls] = None
    netlink_broadcast: Opt[PooledCalls] = None
    netlink_broadcast_filtered: Opt[PooledCalls] = None
    netlink_overrun: Opt[PooledTotal] = None
    deliveries: Opt[PooledTotal] = None
    sched: Opt[PooledSched] = None
    module: Opt[dict[str, Latency]] = None
    send_syscall_ns: Opt[Latency] = None
    nmissed: Opt[dict[str, Count | None]] = Field(None, description=(
        "returns each kretprobe missed, summed over the probed repetitions; null: unknown in "
        "one of them"))


class Blocks(Model):
    """The metric blocks of a repetition, or pooled over a case's repetitions."""

    unicast: Opt[Unicast] = None
    multicast: Opt[Multicast] = None
    dump: Opt[Dump] = None
    module: Opt[Module] = None
    sched: Opt[Sched] = None
    probes: Opt[Probes] = None

    def take(self, pooled: Blocks) -> None:
        """Copy in the blocks ``pooled`` has."""
        for name in pooled.model_fields_set:
            setattr(self, name, getattr(pooled, name))


# --- a case and its repetitions -----------------------------------------------------------------


class _RepetitionHead(Model):
    index: Count
    run_index: Opt[Count] = Field(None, description=(
        "position in its boot's run order, probed and control runs counted together (drift)"))
    duration_s: Opt[Seconds] = None
    phases_s: Opt[Phases] = Field(None, description=(
        "wall-clock seconds per phase of this repetition, in order: load, start, warmup, "
        "measure, read, unload (nlperf/phases.py)"))


class Repetition(Blocks, _RepetitionHead):
    """One measured repetition of a case."""


class Control(Blocks):
    """The probes-off control run: the same repetitions again with no probe attached."""

    repetitions: list[Repetition]


class RepetitionsAuto(Model):
    """``repetitions: auto``: whether the case's headline metrics reached the CI target.

    ``achieved_ci_pct`` maps each headline metric to its bootstrap CI half-width in % of the
    median of its per-repetition values (null: no CI yet); ``rounds`` is how many
    repetitions the case took.
    """

    target_ci_pct: Annotated[float, Field(gt=0)]
    achieved_ci_pct: dict[str, float | None]
    met: bool
    rounds: Count


class _CaseHead(Model):
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.=,-]*$",
                             description="stable, derived from the case's matrix values")]
    params: dict[str, Any]
    status: Opt[CaseStatus] = None
    error: Opt[str] = None
    repetitions: list[Repetition]
    repetitions_auto: Opt[RepetitionsAuto] = None


class Case(Blocks, _CaseHead):
    """One matrix point: its repetitions and the same blocks pooled over them."""

    probes: Opt[CaseProbes] = None  # type: ignore[assignment]
    control: Opt[Control] = None
    capacity: Opt[Capacity] = None


DateTime = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class RunOrder(Model):
    """How the case × repetition runs of each boot were ordered (``seed``: order random)."""

    kind: OrderKind
    seed: Opt[int] = None


class Summary(Model):
    """nlperf run summary (summary.json), results contract v1."""

    schema_version: Literal[1]
    scenario: Annotated[str, Field(min_length=1)]
    status: Status
    error: Opt[str] = Field(None, description="one line: why the run failed or stopped")
    target: Target
    accel: Accel
    kernel: str | None
    clocksource: str | None
    nlperf_version: str
    started: DateTime
    finished: DateTime | None
    order: Opt[RunOrder] = None
    phases_s: Opt[Phases] = Field(None, description=(
        "where the run's wall-clock time went, seconds per phase summed over the run: "
        "module_build, vm_boot, bpf_compile, bpf_attach, the repetitions' load, start, warmup, "
        "measure, read, unload, then report and total (nlperf/phases.py)"))
    cases: list[Case]


# --- env.json, progress lines, and the host→VM hand-off -----------------------------------------


class EnvProbes(Model):
    attach: dict[str, str]


class Env(Model):
    """env.json: where a group of cases ran; later groups of the run go to ``more``."""

    kernel: str
    target: Target
    accel: Accel
    clocksource: str | None
    cpus: int | None
    nlperf_version: str
    python: str
    module_params: dict[str, dict[str, str]]
    probes: EnvProbes
    more: Opt[list[Env]] = None


class Progress(Model):
    """One line of progress.jsonl: a finished case × repetition.

    ``done`` and ``total`` count this boot's runs; ``total`` grows when ``repetitions: auto``
    adds a round.
    """

    case: int
    cases: int
    id: str
    rep: int
    control: bool
    done: int
    total: int
    time: DateTime
    elapsed_s: Annotated[float, Field(description="seconds since the run started")]


class Handoff(Model):
    """``.handoff-<release>.json``: what the outer run hands the inner run in the lab VM."""

    run_dir: Path
    ko: Path
    target: Target
    accel: Accel
    cases: list[str]
    result: str = Field(description="file name in run_dir the inner run writes its GroupResult to")
    samples: str = Field(description="directory in run_dir the inner run writes sample parts to")
    started: DateTime = Field(description="when the run started (progress lines count from it)")


class GroupResult(Model):
    """What one group of cases produced (natively, or in one VM boot: ``.inner-<release>.json``).

    The inner run is its only writer and rewrites it after every repetition; the outer run
    merges it into summary.json, env.json and probe-histograms.json.
    """

    status: Status
    error: Opt[str] = None
    env: Env
    cases: list[Case]
    probe_histograms: dict[str, list[dict[str, Any]]]
    phases_s: Phases = Field(default_factory=dict, description=(
        "what the group spent once: bpf_compile, bpf_attach; in the lab VM inner_run"))
