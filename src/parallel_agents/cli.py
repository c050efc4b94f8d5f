"""The `parallel-agents` command line.

Exit codes: 0 every task succeeded; 1 some task failed or was skipped; 2 invalid plan or
usage (message on stderr, never a traceback); 130 cancelled.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from ._exceptions import ParallelAgentsError, PlanError, UsageError
from .events import Event
from .executor import Executor
from .plan import STRATEGIES, Plan
from .results import RunResult

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130

app = typer.Typer(
    name="parallel-agents",
    help="Run many AI-agent tasks in parallel: plans, pools, retries, durable runs.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

err = Console(stderr=True, highlight=False, soft_wrap=True)


@app.callback()
def _root() -> None:
    """Run many AI-agent tasks in parallel: plans, pools, retries, durable runs."""


def _fail_usage(message: str) -> None:
    err.print(f"error: {message}", markup=False)
    raise typer.Exit(EXIT_USAGE)


def _load_plan(source: str) -> Plan:
    path = Path(source)
    if not path.exists():
        _fail_usage(f"no such plan file: {source} (give a .yaml, .yml or .json plan file)")
    if path.is_dir():
        _fail_usage(f"{source} is a directory; give a .yaml, .yml or .json plan file")
    try:
        return Plan.from_file(path)
    except PlanError as exc:
        _fail_usage(str(exc))
    raise AssertionError("unreachable")


class _LinePrinter:
    """Plain progress lines on stderr (one per transition worth a human's attention)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, event: Event) -> None:
        c = self.console
        k = event.kind
        t = event.task_id
        if k == "task_started":
            c.print(f"[cyan]▶[/] {t} started (attempt {event.attempt})")
        elif k == "task_succeeded":
            dur = (event.data or {}).get("duration", 0.0)
            c.print(f"[green]✓[/] {t} succeeded in {dur:.2f}s")
        elif k == "task_retrying":
            delay = (event.data or {}).get("delay_seconds", 0)
            c.print(f"[yellow]↻[/] {t} failed, retry {event.attempt} in {delay:.1f}s: "
                    f"{_short(event.message)}", markup=True)
        elif k == "task_failed":
            c.print(f"[red]✗[/] {t} failed: {_short(event.message)}")
        elif k == "task_skipped":
            c.print(f"[magenta]-[/] {t} skipped: {event.message}")
        elif k == "task_cancelled":
            c.print(f"[red]■[/] {t} cancelled")
        elif k == "task_progress":
            c.print(f"  {t}: {event.message}")


def _short(text: str | None, limit: int = 300) -> str:
    text = (text or "").replace("[", "\\[")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _summary(result: RunResult, console: Console) -> None:
    n = len(result.tasks)
    ok = result.count("succeeded")
    colour = {"succeeded": "green", "partial": "yellow"}.get(result.status, "red")
    table = Table(title=f"run {result.run_id}: [{colour}]{result.status}[/]", show_header=False,
                  title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("tasks", str(n))
    table.add_row("succeeded", str(ok))
    for status in ("failed", "skipped", "cancelled"):
        if result.count(status):
            table.add_row(status, str(result.count(status)))
    table.add_row("success rate", f"{(ok / n * 100) if n else 100:.1f}%")
    table.add_row("makespan", f"{result.makespan_seconds:.2f}s")
    table.add_row("serial time", f"{result.serial_seconds:.2f}s")
    table.add_row("time saved", f"{max(0.0, result.serial_seconds - result.makespan_seconds):.2f}s")
    table.add_row("speedup", f"{result.speedup:.2f}x")
    table.add_row("efficiency (bound / makespan)", f"{result.efficiency * 100:.0f}%")
    table.add_row("max parallel", str(result.max_parallel))
    table.add_row("critical path", f"{result.critical_path_seconds:.2f}s: "
                  + " -> ".join(result.critical_path[:8])
                  + (" …" if len(result.critical_path) > 8 else ""))
    console.print(table)
    if result.reason and result.status != "succeeded":
        console.print(f"reason: {result.reason}", markup=False)


def _exit_code(result: RunResult) -> int:
    if result.status == "succeeded":
        return EXIT_OK
    if result.status == "cancelled":
        return EXIT_CANCELLED
    return EXIT_FAILED


async def _execute(executor: Executor, plan: Plan | None, resume_id: str | None = None) -> RunResult:
    loop = asyncio.get_running_loop()
    presses = 0

    def on_signal() -> None:
        nonlocal presses
        presses += 1
        if presses == 1:
            err.print("\ncancelling: stopping running tasks (Ctrl-C again to force)…")
            executor.cancel("cancelled by user (signal)")
        else:
            err.print("forced exit")
            sys.exit(EXIT_CANCELLED)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not on Unix
            pass
    try:
        if resume_id is not None:
            return await executor.resume(resume_id)
        assert plan is not None
        return await executor.execute(plan)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover
                pass


@app.command("run")
def run_command(
    plan_file: Annotated[str, typer.Argument(metavar="PLAN", help="A .yaml/.yml/.json plan file.")],
    max_workers: Annotated[Optional[int], typer.Option(
        "--max-workers", min=1, help="Global limit on running tasks (on top of pool limits).")] = None,
    strategy: Annotated[Optional[str], typer.Option(
        "--strategy", help="dependency (default) | sequential | waves | pipeline.")] = None,
    fail_fast: Annotated[bool, typer.Option(
        "--fail-fast", help="Stop everything at the first task that fails for good.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON summary on stdout at the end.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    seed: Annotated[Optional[int], typer.Option(
        "--seed", help="Seed the retry jitter (reproducible runs).")] = None,
    store_path: Annotated[Optional[str], typer.Option(
        "--store", help="Run store file (default: $PARALLEL_AGENTS_STORE or "
                        ".parallel_agents/runs.db).")] = None,
    no_store: Annotated[bool, typer.Option(
        "--no-store", help="Keep the run in memory only (no resume, cache or workspace).")] = False,
    cache: Annotated[bool, typer.Option(
        "--cache", help="Reuse stored outputs of identical tasks (as if every task had cache: true).")] = False,
    rollback: Annotated[bool, typer.Option(
        "--rollback-on-failure", help="If the run fails, restore its workspace to the last checkpoint.")] = False,
) -> None:
    """Run a plan: each task starts as soon as its dependencies succeed and its pool has room."""
    if strategy is not None and strategy not in STRATEGIES:
        _fail_usage(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    plan = _load_plan(plan_file)
    if no_store and (cache or rollback or store_path):
        _fail_usage("--no-store cannot be combined with --store, --cache or --rollback-on-failure")
    store = None if no_store else cli_store.open_store(store_path)
    try:
        executor = Executor(strategy=strategy, max_workers=max_workers,  # type: ignore[arg-type]
                            fail_fast=fail_fast, seed=seed, store=store, cache=cache,
                            rollback_on_failure=rollback)
    except UsageError as exc:
        _fail_usage(str(exc))
    if not quiet:
        executor.subscribe(_LinePrinter(err))
    try:
        result = asyncio.run(_execute(executor, plan))
    except ParallelAgentsError as exc:
        _fail_usage(str(exc))
    finally:
        if store is not None:
            store.close()
    _finish(result, as_json=as_json, quiet=quiet)


def _finish(result: RunResult, *, as_json: bool, quiet: bool) -> None:
    """Print the --json summary and/or the table, and exit with the run's code."""
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), default=_json_default) + "\n")
        sys.stdout.flush()
    if not quiet:
        _summary(result, err)
    raise typer.Exit(_exit_code(result))


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return repr(value)


from . import cli_store  # noqa: E402 - registers resume/status/list on `app`

cli_store.register(app)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("cancelled")
        sys.exit(EXIT_CANCELLED)


if __name__ == "__main__":  # pragma: no cover
    main()
