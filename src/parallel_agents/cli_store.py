"""CLI commands over the run store: `resume`, `status`, `list`.

`register(app)` adds them to the main Typer app; `open_store()` is shared with `run`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from ._exceptions import ParallelAgentsError, StoreError, UsageError
from .progress import LinePrinter
from .plan import Plan
from .store import RunStore, StoredRun, default_store_path, plan_from_store

__all__ = ["register", "open_store"]

_STORE_HELP = "Run store file (default: $PARALLEL_AGENTS_STORE or .parallel_agents/runs.db)."


def open_store(path: str | None, *, must_exist: bool = False) -> RunStore:
    """Open the store or exit 2 with the store's own explanation."""
    from . import cli

    target = default_store_path(path)
    if must_exist and not target.exists():
        cli._fail_usage(f"no run store at {target}; run a plan first, or point to the store "
                        "with --store PATH (or PARALLEL_AGENTS_STORE)")
    try:
        return RunStore(target)
    except StoreError as exc:
        cli._fail_usage(str(exc))
    raise AssertionError("unreachable")


def close_store(store: RunStore | None) -> None:
    """Close the store; a write that failed on the way (a full disk, a damaged file) exits 2
    with the store's explanation, not a traceback, also while another exit is under way."""
    if store is None:
        return
    leaving = sys.exc_info()[1]  # called from a `finally`: an exit may be under way
    try:
        store.close()
    except StoreError as exc:
        from . import cli

        if isinstance(leaving, typer.Exit) and leaving.exit_code == cli.EXIT_USAGE:
            raise leaving from None  # the same failure, reported already
        cli._fail_usage(str(exc))


def _stored_plan(saved: StoredRun) -> Plan | None:
    """The run's plan as stored, for its `--json` record; None for Python function tasks
    (not reloadable) or a stored plan that no longer loads."""
    if saved.has_callables:
        return None
    try:
        return plan_from_store(saved, None)
    except ParallelAgentsError:
        return None


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _dump(data: Any) -> None:
    from .cli import _json_default

    sys.stdout.write(json.dumps(data, default=_json_default) + "\n")
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    @app.command("resume")
    def resume_command(
        run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run to finish.")],
        store_path: Annotated[Optional[str], typer.Option("--store", help=_STORE_HELP)] = None,
        as_json: Annotated[bool, typer.Option(
            "--json", help="Print one JSON summary on stdout at the end (as `run --json`).")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
        backend: Annotated[Optional[str], typer.Option(
            "--backend", help="Where the remaining tasks run: local | ray (default: where the "
            "run ran; e.g. --backend local when its Ray cluster is gone).",
            show_default=False)] = None,
        ray_address: Annotated[Optional[str], typer.Option(
            "--ray-address", metavar="ADDRESS", help="With --backend ray: the cluster to join "
            "(default: the run's).", show_default=False)] = None,
    ) -> None:
        """Finish an interrupted run: succeeded tasks are kept, never run again. It goes on
        with the run's options: its strategy, limits, budget, default model, cassettes
        (--record/--replay) and backend."""
        from . import cli
        from .coordinator import Coordinator, stored_decomposition
        from .executor import Executor

        store = open_store(store_path, must_exist=True)
        try:
            saved = store.load_run(run_id)
            options = saved.options
            if saved.status == "succeeded" and saved.result and saved.owner_pid is None:
                # Nothing to finish; re-finishing would only move its end and add events.
                close_store(store)
                if not quiet:
                    cli.err.print(f"run {run_id} already succeeded: nothing to resume "
                                  f"(`parallel-agents status {run_id}` shows it)", markup=False)
                if as_json:  # its stored result, as `run --json` printed it
                    record = {**saved.result, "max_workers": options.get("max_workers")}
                    plan = _stored_plan(saved)
                    if plan is not None:
                        record["plan"] = plan.describe()
                    _dump(record)
                raise typer.Exit(0)
            stored_backend = options.get("backend") or "local"
            if backend is None:
                backend = stored_backend if stored_backend in ("local", "ray") else "local"
                if backend != stored_backend and not quiet:
                    cli.err.print(f"note: run {run_id} ran on a custom backend "
                                  f"({stored_backend!r}); its remaining tasks run locally",
                                  markup=False)
            if backend == "ray" and ray_address is None and stored_backend == "ray":
                ray_address = options.get("ray_address")  # the cluster the run used
            replay = options.get("replay_dir")
            if replay is not None and not Path(replay).is_dir():
                raise UsageError(f"it replays recorded LLM answers from {replay}, which is "
                                 "gone (without them its tasks would call the real models); "
                                 "restore that folder")
            executor = Executor(store=store, record_dir=options.get("record_dir"),
                                replay_dir=replay, backend=backend, ray_address=ray_address)
        except ParallelAgentsError as exc:
            close_store(store)
            cli._fail_usage(f"cannot resume run {run_id}: {exc}")
        coordinated = stored_decomposition(saved) is not None
        if (not quiet and not coordinated and saved.outputs and saved.workspace
                and not Path(saved.workspace).is_dir()):
            # (a request's resume stops instead: its answer is built from those files)
            cli.err.print(f"note: the workspace of run {run_id} ({saved.workspace}) is gone; it "
                          f"is made again, without the files of the {len(saved.outputs)} "
                          f"task(s) that succeeded before", markup=False)
        if not quiet:
            executor.subscribe(LinePrinter(cli.err))
        try:
            if coordinated:
                # A run started from a request: finish it, then answer as `run` would.
                coordinator = Coordinator()
                outcome = asyncio.run(cli._execute(
                    executor, None, work=lambda: coordinator.resume(run_id, executor=executor)))
            else:
                result = asyncio.run(cli._execute(executor, None, resume_id=run_id))
        except ParallelAgentsError as exc:
            cli._fail_usage(str(exc))
        finally:
            close_store(store)
        if coordinated:
            from .cli_coordinator import print_outcome

            raise typer.Exit(print_outcome(outcome, as_json=as_json))
        # The same record as `run --json`: with the plan and the limit the run ran under.
        cli._finish(result, as_json=as_json, quiet=quiet, plan=_stored_plan(saved),
                    max_workers=options.get("max_workers"))

    @app.command("status")
    def status_command(
        run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run to show.")],
        store_path: Annotated[Optional[str], typer.Option("--store", help=_STORE_HELP)] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    ) -> None:
        """Show one stored run: its status, tasks and attempts."""
        from . import cli

        store = open_store(store_path, must_exist=True)
        try:
            saved = store.load_run(run_id)
        except StoreError as exc:
            cli._fail_usage(str(exc))
        finally:
            close_store(store)
        counts: dict[str, int] = {}
        tasks: dict[str, Any] = {}
        for tid, state in saved.task_states().items():
            counts[state["status"]] = counts.get(state["status"], 0) + 1
            tasks[tid] = {k: state[k] for k in ("status", "pool", "attempts", "cached", "error")}
        data = {
            "run_id": saved.id, "plan": saved.plan_name, "status": saved.display_status(),
            "created_at": saved.created_at, "updated_at": saved.updated_at,
            "finished_at": saved.finished_at, "workspace": saved.workspace,
            "owner": None if saved.owner_pid is None else {
                "pid": saved.owner_pid, "host": saved.owner_host,
                "heartbeat_at": saved.heartbeat_at, "state": saved.owner_state()},
            "options": saved.options, "counts": counts, "events": saved.last_seq, "tasks": tasks,
        }
        answer = (saved.result or {}).get("final_response")
        if answer is not None:  # a run started from a request: the coordinator's answer
            data["final_response"] = answer
        if as_json:
            _dump(data)
            raise typer.Exit(0)
        out = Console(highlight=False, soft_wrap=True)  # paths are not wrapped
        out.print(f"run {saved.id} ({saved.plan_name}): {data['status']}", markup=False)
        out.print(f"started {_when(saved.created_at)}, finished {_when(saved.finished_at)}; "
                  f"{saved.last_seq} events; workspace {saved.workspace}", markup=False)
        out.print("tasks: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
                  markup=False)
        if data["status"] == "interrupted":
            out.print(f"resume it with: parallel-agents resume {saved.id}", markup=False)
        if answer is not None and saved.workspace:
            out.print(f"final response: {saved.workspace}/FINAL_RESPONSE.md", markup=False)
        table = Table(show_header=True)
        for col in ("task", "pool", "status", "attempts", "error"):
            table.add_column(col)
        for tid, t in tasks.items():
            status = t["status"] + (" (cached)" if t["cached"] else "")
            table.add_row(tid, t["pool"], status, str(t["attempts"]), (t["error"] or "")[:80])
        out.print(table)

    @app.command("list")
    def list_command(
        store_path: Annotated[Optional[str], typer.Option("--store", help=_STORE_HELP)] = None,
        limit: Annotated[int, typer.Option("--limit", min=1, help="Newest runs to show.")] = 50,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    ) -> None:
        """List the runs in the store, newest first."""
        store = open_store(store_path, must_exist=True)
        try:
            runs = store.list_runs(limit)
        except StoreError as exc:
            from . import cli

            cli._fail_usage(str(exc))
        finally:
            close_store(store)
        if as_json:
            _dump(runs)
            raise typer.Exit(0)
        # Fits 80 columns: the plan's name gives way (ellipsis), ids and statuses never.
        rows = [(r["run_id"], r["plan"], r["status"], str(r["tasks"]), str(r["succeeded"]),
                 "-" if r["created_at"] is None else time.strftime(
                     "%Y-%m-%d %H:%M", time.localtime(r["created_at"]))) for r in runs]
        table = Table(show_header=True, box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
        for i, col in enumerate(("run", "plan", "status", "tasks", "done", "started")):
            if col == "plan":
                table.add_column(col, overflow="ellipsis", min_width=8)
            else:
                table.add_column(col, no_wrap=True, min_width=max(
                    [len(col), *(len(row[i]) for row in rows)]))
        for row in rows:
            table.add_row(*row)
        console = Console(highlight=False)
        if not console.is_terminal:
            console = Console(highlight=False, width=max(console.width, 120))  # a pipe, a file
        console.print(table)
