"""What the probe suite reads from the kernel's text files: kallsyms and kprobe_profile.

Parsers take the text (unit-tested without a kernel); readers fetch it.

kprobe_profile lists every tracefs kprobe event with its hits and misses. For a kretprobe the
misses are the calls whose return the probe did not see (no free instance while ``maxactive``
calls were in flight, or recursion). BCC creates a tracefs event only for kretprobes attached
with ``maxactive`` (else it uses the perf kprobe PMU, whose misses no file shows); it names it
``r_<function>_bcc_<pid>``.
"""

from __future__ import annotations

from pathlib import Path

KALLSYMS = Path("/proc/kallsyms")
SYS_MODULE = Path("/sys/module")
KPTR_RESTRICT = Path("/proc/sys/kernel/kptr_restrict")
KPROBE_PROFILES = (Path("/sys/kernel/tracing/kprobe_profile"),
                   Path("/sys/kernel/debug/tracing/kprobe_profile"))


def ksym_addr(name: str, module: str | None = None, text: str | None = None) -> int | None:
    """Address of ``name`` in /proc/kallsyms (of ``module`` if given); None if absent.

    0 when kallsyms lists the name with its address hidden (kernel.kptr_restrict: 1 hides
    addresses from readers without CAP_SYSLOG, 2 from everyone): the function exists, and
    probes attach to it by name, but its address is unknown. Lines are "ADDR TYPE NAME" and,
    for a module's symbol, "\t[MODULE]". Found by substring search, not a Python loop over the
    ~150 000 lines: under emulation the loop took ~0.6 s per probed run.
    """
    if text is None:
        text = KALLSYMS.read_text()
    needle = f" {name}\t[{module}]" if module is not None else f" {name}"
    ends = "\n" if module is not None else "\n\t"
    at = text.find(needle)
    while at >= 0:
        end = at + len(needle)
        if end == len(text) or text[end] in ends:
            head = text[text.rfind("\n", 0, at) + 1:at].split()
            if len(head) == 2:
                return int(head[0], 16)
        at = text.find(needle, end)
    return None


class ModuleSymbol:
    """A module function's address, from kallsyms once, then from its section's new base.

    Reading /proc/kallsyms makes the kernel format ~150 000 lines: ~0.4 s under emulation, once
    per module load. A function's offset in its section is fixed by the .ko, so after the
    first lookup the address is that offset from the section's base in
    /sys/module/<module>/sections/ (root reads real addresses there; anyone else reads 0,
    and then every lookup reads kallsyms).
    """

    def __init__(self, name: str, module: str) -> None:
        self.name, self.module = name, module
        self._where: tuple[str, int] | None = None  # (section, offset in it)

    def address(self) -> int | None:
        if self._where is not None:  # one sysfs read: the section's base in this load
            base = section_base(self.module, self._where[0])
            if base:
                return base + self._where[1]
        addr = ksym_addr(self.name, self.module)
        below = [(base, sec) for sec, base in module_sections(self.module).items()
                 if addr and 0 < base <= addr]
        if below:
            base, sec = max(below)
            self._where = (sec, addr - base)
        return addr


def section_base(module: str, section: str) -> int | None:
    """A loaded module's section address (None if unreadable or not loaded; 0 if hidden)."""
    try:
        return int((SYS_MODULE / module / "sections" / section).read_text().strip(), 16)
    except (OSError, ValueError):
        return None


def module_sections(module: str) -> dict[str, int]:
    """Section name -> load address of a loaded module ({} if unreadable or not loaded)."""
    try:
        names = [f.name for f in (SYS_MODULE / module / "sections").iterdir()]
    except OSError:
        return {}
    return {n: b for n in names if (b := section_base(module, n)) is not None}


def kptr_restrict() -> str:
    """kernel.kptr_restrict, for messages ("?" if unreadable)."""
    try:
        return KPTR_RESTRICT.read_text().strip()
    except OSError:
        return "?"


def bcc_kretprobe_event(func: str, pid: int) -> str:
    """The tracefs event BCC creates for a kretprobe on ``func`` attached with maxactive."""
    return f"r_{func.replace('+', '_').replace('.', '_')}_bcc_{pid}"


def kprobe_misses(text: str) -> dict[str, int]:
    """Event name -> misses, from the text of kprobe_profile (``name hits misses`` lines)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) == 3 and f[1].isdigit() and f[2].isdigit():
            out[f[0]] = int(f[2])
    return out


def read_kprobe_misses() -> dict[str, int] | None:
    """Misses per tracefs kprobe event; None when no kprobe_profile is readable."""
    for path in KPROBE_PROFILES:
        try:
            return kprobe_misses(path.read_text())
        except OSError:
            continue
    return None
