"""The ``nlperf`` command line. Names and exit statuses are a contract (docs/ARCHITECTURE.md):
0 ok, 1 run failed, 2 bad input or usage, 130 interrupted.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import click

from nlperf import __version__, capabilities, kmod, signals
from nlperf.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_RUN_FAILED, NlperfError
from nlperf.paths import RESULTS_DIR


def _say(msg: str) -> None:
    click.echo(f"nlperf: {msg}", err=True)


def _bar(total: int):  # type: ignore[no-untyped-def]
    """The run's progress; the runner raises ``total`` when repetitions: auto adds a round.

    smoothing=0: the ETA uses the average over all runs so far, not the last few, because
    probed and control runs alternate and differ in length.
    """
    from tqdm import tqdm

    return tqdm(total=total, unit="run", desc="case × repetition runs", file=sys.stderr,
                disable=None, smoothing=0)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nlperf")
def cli() -> None:
    """nlperf: an eBPF-traced netlink performance lab."""


@cli.command()
@click.argument("scenario", type=click.Path(path_type=Path))
@click.option("--target", type=click.Choice(["auto", "host", "vm"]), default=None,
              help="where to run (overrides the scenario); auto picks host only if capable")
@click.option("--kernel", default=None,
              help="lab VM kernel: a release or a version prefix of one, e.g. 6.1 (overrides "
              "the scenario)")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="run directory to create (must not exist)")
@click.option("--timeout", type=click.FloatRange(min=1), default=3600.0, show_default=True,
              help="seconds for the whole run in the VM")
@click.option("--no-probes", is_flag=True, help="do not attach BCC probes")
@click.option("--no-report", is_flag=True, help="do not write the report")
@click.option("--verbose", "-v", is_flag=True,
              help="print where the run's time went (its phases) at the end")
@click.option("--internal-handoff", type=click.Path(path_type=Path), hidden=True)
def run(scenario: Path, target: str | None, kernel: str | None, out: Path | None,
        timeout: float, no_probes: bool, no_report: bool, verbose: bool,
        internal_handoff: Path | None) -> None:
    """Run SCENARIO (a YAML file) and write a results directory."""
    from nlperf.models import Status
    from nlperf.runner import RunRequest
    from nlperf.runner import run as do_run

    req = RunRequest(scenario, target, kernel, out, timeout, not no_probes, internal_handoff)
    outcome = do_run(req, _say, None if internal_handoff else _bar)
    if internal_handoff is not None:  # the inner run in the lab VM: the outer reports
        sys.exit(outcome.exit_code)
    if outcome.status is Status.complete and not no_report:
        from nlperf.report import write_report
        from nlperf.results import record_report_phase

        t0 = time.monotonic()
        report = write_report(outcome.run_dir)
        record_report_phase(outcome.run_dir, time.monotonic() - t0)
        _say(f"{outcome.status}: report {report}")
    elif outcome.status is Status.failed:  # why, in one line: the summary records it
        from nlperf.results import read_summary

        _say(f"error: {read_summary(outcome.run_dir).error}; results {outcome.run_dir}")
    elif outcome.status is Status.interrupted:
        # No report: whoever stopped the run wants it to stop now, and rendering the plots takes
        # minutes under emulation while a second Ctrl-C is ignored (signals.py). What finished
        # is kept; the report is one command away.
        _say(f"interrupted: results {outcome.run_dir}; "
             f"`nlperf report {outcome.run_dir}` reports the repetitions that finished")
    else:
        _say(f"{outcome.status}: results {outcome.run_dir}")
    _say_capacity(outcome.run_dir)
    if verbose:
        _say_phases(outcome.run_dir)
    click.echo(str(outcome.run_dir))
    sys.exit(outcome.exit_code)


def _say_capacity(run_dir: Path) -> None:
    """The knees and the planning rule of every case with a capacity sweep (issue #11)."""
    from nlperf.capacity import summary_lines
    from nlperf.results import read_summary

    for case in read_summary(run_dir).cases:
        if case.capacity is not None:
            for line in summary_lines(case.id, case.capacity):
                _say(line)


def _say_phases(run_dir: Path) -> None:
    from nlperf.phases import lines
    from nlperf.results import read_summary

    got = read_summary(run_dir).phases_s
    _say("where the time went:" if got else "where the time went: no phases recorded")
    for line in lines(got or {}):
        _say(f"  {line}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def doctor(as_json: bool) -> None:
    """What this machine can do, what is missing, and which target auto picks."""
    checks = capabilities.run_checks()
    try:
        target, why = capabilities.pick_target("auto", checks)
    except NlperfError as e:
        target, why = "none", str(e)
    if as_json:
        click.echo(json.dumps({"checks": [c.__dict__ for c in checks], "target": target,
                               "why": why}, indent=2))
        return
    width = max(len(c.name) for c in checks)
    for c in checks:
        mark = "ok " if c.ok else "-- "
        line = f"{mark} {c.name:<{width}}  {c.detail}"
        if not c.ok and c.fix:
            line += f"  → {c.fix}"
        click.echo(line)
    click.echo(f"\ntarget: {target} ({why})")


@cli.group("vm")
def vm_group() -> None:
    """The throwaway lab VM."""


@vm_group.command("exec", context_settings={"ignore_unknown_options": True})
@click.option("--kernel", default=None, help="lab kernel: a release or a version prefix of one")
@click.option("--timeout", type=click.FloatRange(min=1), default=900.0, show_default=True)
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def vm_exec(kernel: str | None, timeout: float, cmd: tuple[str, ...]) -> None:
    """Boot the lab VM and run CMD as root in the current directory (results/ writable)."""
    from nlperf.targets import vm

    lab = vm.pick_lab_kernel(kernel)
    kmod.build(lab.release)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    rc = vm.boot(lab, shlex.join(cmd), rwdirs=[RESULTS_DIR], timeout=timeout, cwd=Path.cwd())
    sys.exit(rc)


@cli.group("kmod")
def kmod_group() -> None:
    """Build, load, unload and query the companion module."""


@kmod_group.command("build")
@click.option("--kernel", default=None, help="kernel release (default: this kernel)")
def kmod_build(kernel: str | None) -> None:
    """Build nlperf.ko into build/kmod/<release>/."""
    ko = kmod.build(kernel or platform.release())
    click.echo(str(ko))


@kmod_group.command("load")
@click.option("--mode", type=click.Choice(["callback", "kthread", "workqueue"]),
              default="callback", show_default=True)
@click.option("--param", "params", multiple=True, metavar="K=V",
              help="module parameter, repeatable (queue_len, work_ns, ...)")
def kmod_load(mode: str, params: tuple[str, ...]) -> None:
    """Load the module for this kernel (building it if needed)."""
    values = {"mode": mode, **kmod.parse_kv(params)}
    checked = kmod.validate_params(values)
    release = platform.release()
    ko = kmod.ko_path(release)
    if not ko.exists():
        ko = kmod.build(release)
    kmod.load(ko, checked)
    _say(f"loaded {ko} ({' '.join(f'{k}={v}' for k, v in checked.items())})")


@kmod_group.command("unload")
def kmod_unload() -> None:
    """Unload the module (waits for lab sockets to close; never forces)."""
    kmod.unload()


@kmod_group.command("stats")
@click.option("--json", "as_json", is_flag=True)
@click.option("--proto", type=int, default=None, help="protocol (default: the loaded one)")
def kmod_stats(as_json: bool, proto: int | None) -> None:
    """The module's counters."""
    from nlperf.nlsock import Control

    if proto is None:
        proto = int(kmod.loaded_params().get("proto", str(kmod.PARAMS["proto"].default)))
    with Control(proto) as ctl:
        stats = ctl.stats().as_dict()
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    for k, v in stats.items():
        if k != "groups":
            click.echo(f"{k:<16} {v}")
    for g, counters in stats["groups"].items():  # type: ignore[union-attr]
        click.echo(f"group {g:<10} " + " ".join(f"{k}={v}" for k, v in counters.items()))


ALONG_HELP = ("matrix key whose values the cases are compared along; the first value is the "
              "baseline (default: module.mode when it varies, else the first key with several "
              "values other than traffic)")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--along", default=None, metavar="KEY", help=ALONG_HELP)
def report(run_dir: Path, along: str | None) -> None:
    """Write report.md (PNGs beside it) and report.html for RUN_DIR."""
    from nlperf.report import write_report

    click.echo(str(write_report(run_dir, along)))


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "json", "csv"]), default="md",
              show_default=True)
@click.option("--threshold", type=click.FloatRange(min=0, max=100), default=2.0,
              show_default=True, metavar="PCT",
              help="noise band in percent: a ratio CI inside 1 ± PCT/100 is 'no change'")
@click.option("--along", default=None, metavar="KEY",
              help="with one RUN_DIR: " + ALONG_HELP)
def compare(run_dirs: tuple[Path, ...], fmt: str, threshold: float, along: str | None) -> None:
    """Verdicts: RUN_DIRs case by case against the first (cases matched by id), or one
    RUN_DIR's cases along a matrix key."""
    from nlperf import boot_ratios
    from nlperf import compare as comparing
    from nlperf.analysis import analyze
    from nlperf.errors import BadInput

    if along is not None and len(run_dirs) > 1:
        raise BadInput("--along compares the cases of one run: give one RUN_DIR")
    options = comparing.options(threshold)
    runs = [analyze(d) for d in run_dirs]
    if len(runs) == 1:
        by_key = comparing.along(runs[0], along, options)
        if by_key is None:
            raise BadInput(f"{run_dirs[0]}: no matrix key with several values to compare "
                           "along (give --along KEY, or a second run to compare with)")
        # along a boot key (kernel, target): its within-boot ratios too, which the boot's
        # speed does not confound
        result = comparing.along_as_runs(by_key, options,
                                         boot_ratios.across(runs[0], by_key.key, options))
    else:
        result = comparing.between_runs(runs, options)
    click.echo(comparing.render(result, fmt))


def main() -> None:
    signals.install()
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort as e:
        # click turns a KeyboardInterrupt (Ctrl-C, or SIGTERM/SIGHUP as signals.Terminated)
        # leaving a command into Abort: the status still says which signal it was
        cause = e.__cause__ if isinstance(e.__cause__, KeyboardInterrupt) else None
        _say(f"interrupted ({cause})" if isinstance(cause, signals.Terminated)
             else "interrupted")
        sys.exit(signals.exit_status(cause) if cause is not None else EXIT_INTERRUPTED)
    except click.ClickException as e:
        e.show()
        sys.exit(EXIT_BAD_INPUT)
    except NlperfError as e:
        _say(f"error: {e}")
        sys.exit(e.exit_code)
    except KeyboardInterrupt as e:
        _say(f"interrupted ({e})" if isinstance(e, signals.Terminated) else "interrupted")
        sys.exit(signals.exit_status(e))
    except Exception as e:  # a bug: one line, the traceback only on request
        if os.environ.get("NLPERF_DEBUG"):
            raise
        _say(f"internal error: {type(e).__name__}: {e} (NLPERF_DEBUG=1 shows the traceback)")
        sys.exit(EXIT_RUN_FAILED)
