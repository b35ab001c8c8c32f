"""Context switches of a process, from /proc/<pid>/status: independent of any BPF probe."""

from __future__ import annotations

from pathlib import Path


def ctx_switches(pid: int | str = "self", status: str | None = None) -> dict[str, int]:
    text = status if status is not None else Path(f"/proc/{pid}/status").read_text()
    out = {"voluntary": 0, "involuntary": 0}
    for line in text.splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            out["voluntary"] = int(line.split()[1])
        elif line.startswith("nonvoluntary_ctxt_switches:"):
            out["involuntary"] = int(line.split()[1])
    return out


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}
