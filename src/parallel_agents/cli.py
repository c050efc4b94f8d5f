"""The `parallel-agents` command line.

Exit codes: 0 every task succeeded; 1 some task failed or was skipped; 2 invalid plan or
usage (message on stderr, never a traceback); 130 cancelled.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from . import cli_ui
from ._exceptions import ParallelAgentsError, PlanError, UsageError
from .executor import Executor
from .plan import STRATEGIES, Plan
from .progress import LinePrinter, LiveProgress, make_progress, print_summary
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


def _exit_code(result: RunResult) -> int:
    if result.status == "succeeded":
        return EXIT_OK
    if result.status == "cancelled":
        return EXIT_CANCELLED
    return EXIT_FAILED


async def _execute(executor: Executor, plan: Plan | None, resume_id: str | None = None,
                   work: Callable[[], Awaitable[Any]] | None = None) -> Any:
    """Run `plan` (or resume `resume_id`, or await `work()`) on `executor`, with Ctrl-C and
    SIGTERM cancelling its tasks cleanly."""
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
        if work is not None:
            return await work()
        if resume_id is not None:
            return await executor.resume(resume_id)
        assert plan is not None
        return await executor.execute(plan)
    finally:
        await executor.aclose()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):  # pragma: no cover
                pass


@app.command("run")
def run_command(
    plan_file: Annotated[str, typer.Argument(
        metavar="PLAN|REQUEST", help="A .yaml/.yml/.json plan file, or a request in words.")],
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
    config_file: cli_ui.ConfigOption = None,
    budget: Annotated[Optional[float], typer.Option(
        "--budget", min=0, metavar="USD",
        help="Spending limit for LLM calls; tasks that cannot afford their worst case are "
             "skipped and the run ends partial.")] = None,
    record: Annotated[Optional[str], typer.Option(
        "--record", metavar="DIR", help="Record LLM calls to cassettes in DIR.")] = None,
    replay: Annotated[Optional[str], typer.Option(
        "--replay", metavar="DIR", help="Answer LLM calls from cassettes in DIR (offline).")] = None,
    workspace: Annotated[Optional[str], typer.Option(
        "--workspace", metavar="DIR", help="Folder LLM tasks read and write files in.")] = None,
    backend: Annotated[str, typer.Option(
        "--backend", help="Where tasks run: local (this process) | ray (Ray workers).")] = "local",
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", metavar="ADDRESS",
        help="With --backend ray: the cluster to join (e.g. auto, host:6379). "
             "Default: start a local Ray instance.")] = None,
    template: Annotated[Optional[str], typer.Option(
        "--template", help="With a request: plan from a template (full_stack | api | frontend "
        "| microservice | file_based | feature_based | layer_based | phases).")] = None,
    show_plan: Annotated[bool, typer.Option(
        "--show-plan", help="With a request: print the plan and predicted timeline, run "
        "nothing.")] = False,
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
    """Run a plan file, or a request in words (the coordinator plans it, agents run it)."""
    if strategy is not None and strategy not in STRATEGIES:
        _fail_usage(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    if budget is not None and not math.isfinite(budget):  # inf would print as `Infinity`
        _fail_usage(f"--budget must be a finite number of USD, got {budget}")
    if no_store and (cache or rollback or store_path):
        _fail_usage("--no-store cannot be combined with --store, --cache or --rollback-on-failure")
    from . import cli_coordinator

    if cli_coordinator.looks_like_request(plan_file):
        from .config import load_config
        from .roles import configure_default_model

        try:
            # The options win over the environment and the config file, as for a plan file.
            config = load_config(config_file, cli={"defaults.max_workers": max_workers,
                                                   "defaults.strategy": strategy,
                                                   "defaults.fail_fast": fail_fast or None})
        except ParallelAgentsError as exc:
            _fail_usage(str(exc))
        configure_default_model(config.get("defaults.model"))
        max_workers = config.get("defaults.max_workers")
        if budget is None and config.get("budget.max_cost_usd") is not None:
            budget = float(config.get("budget.max_cost_usd"))
        options: dict[str, Any] = {"seed": seed, "budget_usd": budget, "record_dir": record,
                                   "replay_dir": replay, "backend": backend,
                                   "ray_address": ray_address,
                                   "strategy": config.get("defaults.strategy"),
                                   "fail_fast": bool(config.get("defaults.fail_fast"))}
        # A request's run is durable like a plan file's (`resume RUN_ID` finishes its tasks),
        # in the same store, unless --no-store; --show-plan runs nothing, so opens nothing.
        store = None
        if not (no_store or show_plan):
            if store_path is None and config.source("defaults.store") != "default":
                store_path = str(config.get("defaults.store"))
            store = cli_store.open_store(store_path)
            options.update(store=store, cache=cache, rollback_on_failure=rollback)
        try:
            code = cli_coordinator.run_request(
                plan_file, template=template, show_plan=show_plan, as_json=as_json, quiet=quiet,
                max_workers=max_workers, err=err, line_printer=LinePrinter(err),
                executor_options=options, workspace=workspace,
                providers=config.provider_settings())
        finally:
            cli_store.close_store(store)
        raise typer.Exit(code)
    if template is not None or show_plan:
        _fail_usage("--template and --show-plan go with a request in words, not a plan file")
    setup = cli_ui.setup_run(plan_file, config_file=config_file, max_workers=max_workers,
                             strategy=strategy, fail_fast=fail_fast)
    plan = setup.plan
    # The config file / environment supply the store and budget when the options do not.
    if store_path is None and setup.config.source("defaults.store") != "default":
        store_path = str(setup.config.get("defaults.store"))
    if budget is None and setup.config.get("budget.max_cost_usd") is not None:
        budget = float(setup.config.get("budget.max_cost_usd"))
    store = None if no_store else cli_store.open_store(store_path)
    try:
        executor = Executor(strategy=setup.strategy,  # type: ignore[arg-type]
                            max_workers=setup.max_workers, fail_fast=setup.fail_fast, seed=seed,
                            budget_usd=budget, record_dir=record, replay_dir=replay,
                            workspace=workspace, backend=backend, ray_address=ray_address,
                            store=store, cache=cache, rollback_on_failure=rollback)
    except UsageError as exc:
        _fail_usage(str(exc))
    progress = None
    if not quiet:
        progress = make_progress(plan, err, strategy=setup.strategy, max_workers=setup.max_workers)
        executor.subscribe(progress)
        if isinstance(progress, LiveProgress):
            progress.start()
    try:
        result = asyncio.run(_execute(executor, plan))
    except ParallelAgentsError as exc:
        _fail_usage(str(exc))
    finally:
        if isinstance(progress, LiveProgress):
            progress.stop()
        cli_store.close_store(store)
    _finish(result, as_json=as_json, quiet=quiet, plan=plan, max_workers=setup.max_workers)


def _finish(result: RunResult, *, as_json: bool, quiet: bool, plan: Plan | None = None,
            max_workers: int | None = None) -> None:
    """Print the --json summary and/or the table, and exit with the run's code."""
    if as_json:
        from .report import run_record

        # The plan and the limit make the record self-sufficient for `report` and what-ifs.
        record = run_record(result, plan, max_workers=max_workers)
        sys.stdout.write(json.dumps(record, default=_json_default) + "\n")
        sys.stdout.flush()
    if not quiet:
        print_summary(result, err, plan)
    raise typer.Exit(_exit_code(result))


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return repr(value)


from . import cli_server  # noqa: E402 - commands in their own modules register themselves
from . import cli_store  # noqa: E402

cli_server.register(app)
cli_ui.register(app)
cli_store.register(app)


class _PipeSafe:
    """stdout/stderr that outlive their reader: once a pipe is closed (`2>&1 | head -1`),
    writes go to /dev/null instead of raising in the middle of a run, whose outcome and exit
    code do not depend on who reads its progress."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    def _drop(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main() -> None:
    """Console-script entry point."""
    sys.stdout = _PipeSafe(sys.stdout)  # type: ignore[assignment]
    sys.stderr = _PipeSafe(sys.stderr)  # type: ignore[assignment]
    try:
        app()
    except KeyboardInterrupt:
        err.print("cancelled")
        sys.exit(EXIT_CANCELLED)


if __name__ == "__main__":  # pragma: no cover
    main()
