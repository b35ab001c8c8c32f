"""The ``capacity`` block of a case in the results contract (nlperf/capacity.py fills it;
nlperf/models.py puts it on the case)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from nlperf.model_base import Count, Model, Opt


class CapacityPoint(Model):
    """One probe run of a knee search: the generator's rate and what the receivers saw, summed
    over them (``lost = sent − received``; ``sk_drops`` null when unknown)."""

    rate_per_s: Annotated[float, Field(gt=0, description="the generator's rate asked for")]
    achieved_per_s: Opt[float] = Field(None, description=(
        "1e9 / the mean kernel send spacing of consecutive messages a receiver got (an "
        "emulated generator may fall short of the rate asked); null: no such pair"))
    sent: Count
    received: Count
    lost: int
    sk_drops: int | None
    enobufs: Count
    loss_fraction: Annotated[float, Field(ge=0)]
    confirm: bool = Field(False, description="a confirmation run at the knee")


# how a knee search ended (docs/scenarios.md): loss: loss seen above the knee
# (failed_at_per_s); rates / generator: no loss seen, the knee is a lower bound (>=): the top
# of `rates` was reached / the generator fell short of it; no_knee: every zero-loss rate lay
# above a loss (or the lowest rate lost); unfinished: the sweep stopped during this search
KneeOutcome = Literal["loss", "rates", "generator", "no_knee", "unfinished"]


class CapacitySeries(Model):
    """One (delay_us, rcvbuf, no_enobufs) of the sweep: its probe points in run order and the
    knee, the highest ACHIEVED rate with zero loss below the lowest achieved rate that lost
    (``failed_at_per_s``; null: none did), held in every confirmation run (null: no knee);
    ``outcome`` says how the search ended (>= when no loss was seen)."""

    delay_us: Count
    rcvbuf: Count
    no_enobufs: bool
    knee_per_s: float | None
    failed_at_per_s: float | None
    confirmed: bool
    outcome: Opt[KneeOutcome] = Field(None, description=(
        "loss: loss seen above the knee; rates / generator: none seen, the knee is a lower "
        "bound (the top of rates / the generator's reach); no_knee; unfinished: the sweep "
        "stopped during this search. Absent in results written before it was recorded"))
    points: list[CapacityPoint]


class Truesize(Model):
    """What the kernel charges a receive queue for one queued multicast message of
    ``size`` payload bytes (sk_rmem_alloc with ``queued`` messages, divided by them)."""

    size: Annotated[int, Field(ge=1)]
    queued: Annotated[int, Field(ge=1)]
    truesize: Annotated[float, Field(ge=0)]
    ratio: Annotated[float, Field(ge=0, description="truesize / payload size")]


class Capacity(Model):
    """The ``capacity`` sweep of a case (nlperf/capacity.py): knees per receiver cost, rcvbuf
    and NETLINK_NO_ENOBUFS, the measured charge per queued message, and the planning rule."""

    messages: Annotated[int, Field(ge=1, description="messages per probe run (the burst)")]
    size: Annotated[int, Field(ge=1, description="payload bytes per message in the probes")]
    series: list[CapacitySeries]
    truesize: list[Truesize]
    rules: list[str]
