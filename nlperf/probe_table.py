"""The one definition of the numbers bpf/netlink.bpf.c and Python share.

Probe rows, directions, scheduler roles and result classes (with the errno values that select
them) are written here only. bpf/netlink.bpf.c defines none of them: it is compiled with the
``-D`` defines :func:`bpf_defines` generates from these tables, and the Python that reads its
maps indexes them with the same tables. tests/test_probes_logic.py checks that the defines
cover every such name the C source uses and that the C defines none of them itself.
"""

from __future__ import annotations

import errno

# (C macro, name in the probes block and the histograms), in row order. The ``hist`` map's row
# is probe * len(DIRS) + direction.
PROBE_MACROS: tuple[tuple[str, str], ...] = (
    ("P_UNICAST", "netlink_unicast"),
    ("P_BROADCAST", "netlink_broadcast"),
    ("P_BCAST_FILT", "netlink_broadcast_filtered"),
    ("P_INPUT", "nlperf_input"),
    ("P_PROCESS", "nlperf_process"),
    ("P_WORK", "work"),  # workqueue items running the module's nlperf_work_fn
    ("P_WAKEUP", "wakeup"),  # wakeup -> running, per role
    ("P_OFFCPU", "offcpu"),  # blocked: voluntary switch-out -> switch-in, per role
    ("P_SEND", "send_syscall"),  # a lab process's sendto/sendmsg: entry -> exit, per role
)
PROBES = tuple(name for _, name in PROBE_MACROS)
NCOUNTED = 3  # the first NCOUNTED probes count calls by direction and result
NTIMED = 5  # the first NTIMED probes are timed entry -> exit (a per-thread stack of frames)

# Direction of a netlink call: port 0 is the kernel; else a kernel sending socket is the kernel.
DIR_MACROS: tuple[tuple[str, str], ...] = (
    ("D_TO_KERNEL", "to_kernel"),  # a user socket sends to the kernel (port 0)
    ("D_TO_USER", "kernel_to_user"),  # the sending socket is a kernel socket
    ("D_USER_USER", "user_to_user"),  # user socket to a user port, or a user multicast
)
DIRS = tuple(name for _, name in DIR_MACROS)
D_NONE = 0  # the one row of a probe without a direction (module functions, workqueue items)

# Scheduler roles: the value of the ``watch`` map, and the direction slot of the scheduler rows.
ROLE_MACROS: tuple[tuple[str, str], ...] = (
    ("ROLE_LAB", "lab"),  # sender / receiver processes
    ("ROLE_KTHREAD", "kthread"),  # the module's worker kthread
)
ROLES = tuple(name for _, name in ROLE_MACROS)
ROLE_LAB, ROLE_KTHREAD = ROLES.index("lab"), ROLES.index("kthread")

# (C macro, class name, errno selecting it): the result of netlink_unicast / netlink_broadcast.
# R_OK takes every return value >= 0 (netlink_unicast returns the byte count), R_OTHER every
# -errno not listed.
RESULT_CLASSES: tuple[tuple[str, str, int | None], ...] = (
    ("R_OK", "ok", None),
    ("R_EAGAIN", "EAGAIN", errno.EAGAIN),
    ("R_ENOBUFS", "ENOBUFS", errno.ENOBUFS),
    ("R_ESRCH", "ESRCH", errno.ESRCH),
    ("R_ECONNREFUSED", "ECONNREFUSED", errno.ECONNREFUSED),
    ("R_OTHER", "other", None),
)
RESULTS = tuple(name for _, name, _ in RESULT_CLASSES)
_RESULT_OF_ERRNO = {e: name for _, name, e in RESULT_CLASSES if e is not None}

LOG2_SLOTS = 65  # log2 histogram: slot 0 holds 0, slot s >= 1 holds [2^(s-1), 2^s)

# Name prefixes that belong to these tables: the C source must not #define any of them.
TABLE_NAMES = ("P_", "D_", "ROLE_", "R_", "NPROBES", "NDIRS", "NRESULTS", "NCOUNTED", "NTIMED",
               "LOG2_SLOTS", "RESULT_OF_ERRNO")


def hist_index(probe: int, direction: int) -> int:
    """Row of the ``hist`` map."""
    return probe * len(DIRS) + direction


def calls_index(probe: int, direction: int, result: int) -> int:
    """Slot of the ``calls`` map."""
    return hist_index(probe, direction) * len(RESULTS) + result


def classify_result(ret: int) -> str:
    """The result class of a netlink_unicast/netlink_broadcast return value (as the BPF C does).

    netlink_unicast returns the byte count on success, netlink_broadcast 0: both are ``ok``.
    """
    if ret >= 0:
        return RESULTS[0]
    return _RESULT_OF_ERRNO.get(-ret, RESULTS[-1])


def bpf_defines() -> list[str]:
    """The ``-D`` defines that give bpf/netlink.bpf.c every number of these tables."""
    out: list[str] = []
    for table in (PROBE_MACROS, DIR_MACROS, ROLE_MACROS):
        out += [f"-D{macro}={i}" for i, (macro, _) in enumerate(table)]
    out += [f"-D{macro}={i}" for i, (macro, _, _) in enumerate(RESULT_CLASSES)]
    out += [f"-DNPROBES={len(PROBES)}", f"-DNCOUNTED={NCOUNTED}", f"-DNTIMED={NTIMED}",
            f"-DNDIRS={len(DIRS)}", f"-DD_NONE={D_NONE}", f"-DNRESULTS={len(RESULTS)}",
            f"-DLOG2_SLOTS={LOG2_SLOTS}"]
    # RESULT_OF_ERRNO(e): the class of a positive errno, as one conditional expression
    chain = " : ".join(f"(e) == {e} ? {macro}" for macro, _, e in RESULT_CLASSES
                       if e is not None)
    out.append(f"-DRESULT_OF_ERRNO(e)=({chain} : {RESULT_CLASSES[-1][0]})")
    return out
