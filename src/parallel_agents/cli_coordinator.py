"""`parallel-agents run "REQUEST TEXT"`: the coordinator on the command line.

`run` calls `run_request` when its first argument is not an existing file and does not look
like a plan file name. The planner is the model named by `$PARALLEL_AGENTS_MODEL` (default:
the embedded local model) when the provider registry is installed;
`PARALLEL_AGENTS_PLANNER=keywords` plans without a model (the keyword analysis); `model` (or
unset) is the default, anything else is an error.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from ._exceptions import ParallelAgentsError, UsageError
from .coordinator import Coordinator, CoordinatorResult, Decomposition, to_plan
from .plan import Plan
from .providers.base import Provider, split_model
from .simulate import simulate

__all__ = ["looks_like_request", "run_request"]

_PLAN_SUFFIXES = (".yaml", ".yml", ".json")
_FALLBACK_MODEL = "local:smollm2"


def looks_like_request(argument: str) -> bool:
    """Not an existing path, and not a (mistyped) plan file name: a request in words.

    An empty or blank argument is an (empty) request, so the coordinator can say so: as a
    path, `""` means the current directory."""
    stripped = argument.strip()
    if not stripped:
        return True
    if Path(argument).exists():
        return False
    return not (stripped.lower().endswith(_PLAN_SUFFIXES) and " " not in stripped)


#: `PARALLEL_AGENTS_PLANNER` values: what each selects.
PLANNERS = {"model": "the default: plan with the model of PARALLEL_AGENTS_MODEL or the config",
            "keywords": "the keyword analysis, no model call"}


def planner_choice() -> str:
    """`PARALLEL_AGENTS_PLANNER`, checked: "model" (also when unset) or "keywords"."""
    raw = os.environ.get("PARALLEL_AGENTS_PLANNER", "")
    choice = raw.strip().lower() or "model"
    if choice not in PLANNERS:
        valid = " or ".join(f"{name!r} ({what})" for name, what in PLANNERS.items())
        raise UsageError(f"unknown PARALLEL_AGENTS_PLANNER={raw.strip()!r}: set it to "
                         f"{valid}, or unset it")
    return choice


def _planner(providers: Mapping[str, Any] | None = None) -> tuple[Provider | None, str, str]:
    """(provider, model name for requests, how it was chosen).

    Raises UsageError for an unknown `PARALLEL_AGENTS_PLANNER`: a typo must not silently
    plan with a (possibly paid) model the user meant to avoid."""
    if planner_choice() == "keywords":
        return None, "", "keyword analysis (PARALLEL_AGENTS_PLANNER=keywords)"
    try:
        from .roles import default_model
    except ImportError:
        spec = os.environ.get("PARALLEL_AGENTS_MODEL") or _FALLBACK_MODEL
    else:
        spec = default_model()  # PARALLEL_AGENTS_MODEL, the config's defaults.model, built-in
    try:
        from .providers.registry import get_provider  # type: ignore[import-not-found]
    except ImportError:
        return None, "", "keyword analysis (no provider registry installed)"
    provider = get_provider(spec, dict(providers or {}))
    return provider, split_model(spec)[1], f"model {spec}"


def _timeline(decomposition: Decomposition, strategy: str | None,
              max_workers: int | None) -> tuple[Plan, Any]:
    """The predicted schedule under the run's strategy and worker limit."""
    plan = to_plan(decomposition.plan, run_task=lambda spec, ctx: None)
    return plan, simulate(plan, strategy=strategy,  # type: ignore[arg-type]
                          max_workers=max_workers)


def _show_plan(decomposition: Decomposition, planner: str, as_json: bool,
               out: Console, strategy: str | None = None,
               max_workers: int | None = None) -> None:
    plan, sim = _timeline(decomposition, strategy, max_workers)
    spans = {a.task_id: (a.start, a.end) for a in sim.attempts}
    if as_json:
        data = decomposition.to_dict()
        data["planner"] = planner
        data["max_workers"] = max_workers
        data["schedule_strategy"] = strategy or "dependency"
        data["timeline"] = [{"task": t["id"], "start": spans[t["id"]][0],
                             "end": spans[t["id"]][1]} for t in decomposition.tasks]
        data["predicted_makespan_seconds"] = sim.makespan
        data["predicted_serial_seconds"] = sim.serial_seconds
        sys.stdout.write(json.dumps(data, default=str) + "\n")
        return
    d = decomposition
    out.print(f"[bold]Plan for:[/] {d.request}")
    src = d.source + (f" (template {d.template})" if d.template else "")
    out.print(f"planner: {planner}; source: {src}", markup=False)
    out.print(f"decision: {d.decision}: {d.reason}", markup=False)
    table = Table(show_header=True, header_style="bold")
    for col in ("task", "agent", "pool", "prio", "depends on", "est", "start", "end",
                "timeline"):
        table.add_column(col, justify="right" if col in ("prio", "est", "start", "end")
                         else "left")
    width = 30
    span = sim.makespan or 1.0
    for t in d.tasks:
        start, end = spans[t["id"]]
        a, b = int(start / span * width), max(int(start / span * width) + 1,
                                              int(end / span * width))
        bar = " " * a + "█" * (b - a)
        table.add_row(t["id"], t.get("agent", "-"), t["pool"], str(t["priority"]),
                      ", ".join(t["depends_on"]) or "-", f"{t['estimated_seconds']:g}s",
                      f"{start:g}s", f"{end:g}s", bar)
    out.print(table)
    limits = "".join(f", {what}" for what in (
        f"--max-workers {max_workers}" if max_workers is not None else "",
        f"--strategy {strategy}" if strategy not in (None, "dependency") else "") if what)
    out.print(f"predicted: {sim.makespan:g}s with these pools{limits} instead of "
              f"{sim.serial_seconds:g}s one after another", markup=False)
    if d.repairs:
        out.print(f"repairs ({len(d.repairs)}):", markup=False)
        for r in d.repairs:
            out.print(f"  - {r}", markup=False)


def run_request(
    request: str, *, template: str | None, show_plan: bool, as_json: bool, quiet: bool,
    max_workers: int | None, err: Console, line_printer: Any = None,
    executor_options: dict[str, Any] | None = None, workspace: str | None = None,
    providers: Mapping[str, Any] | None = None,
) -> int:
    """Plan (and unless `show_plan`, run) a request. Returns the exit code.

    `executor_options` may hold `strategy`: with `max_workers`, the limits the prediction,
    the serial/parallel decision and the run all use."""
    from .cli import EXIT_USAGE

    try:
        if not request.strip():  # before a planner is built or a store is written
            raise UsageError("the request is empty: say what you want built or done")
        planner_choice()  # a bad value is an error even when a template plans
        provider, planner_model, planner = ((None, "", "template") if template
                                            else _planner(providers))
        coordinator = Coordinator(provider, planner_model=planner_model, providers=providers,
                                  max_workers=max_workers, workspace=workspace,
                                  executor_options={k: v for k, v in
                                                    (executor_options or {}).items()
                                                    if v is not None},
                                  on_event=None if quiet or line_printer is None
                                  else line_printer)
        decomposition = asyncio.run(coordinator.plan(request, template))
        if show_plan:
            _show_plan(decomposition, planner, as_json,
                       Console(highlight=False, width=max(Console().width, 150)),
                       coordinator.executor_options.get("strategy"), max_workers)
            return 0
        if not quiet:
            err.print(f"plan: {len(decomposition.tasks)} task(s), {decomposition.decision} "
                      f"({decomposition.reason})", markup=False)
            for r in decomposition.repairs:
                if r.kind == "budget":  # the model was not asked: say so up front
                    err.print(f"planner: {r.message}", markup=False)
        outcome = asyncio.run(coordinator.execute(decomposition))
    except ParallelAgentsError as exc:
        err.print(f"error: {exc}", markup=False)
        return EXIT_USAGE
    return print_outcome(outcome, as_json=as_json)


def print_outcome(outcome: CoordinatorResult, *, as_json: bool) -> int:
    """The final response (or with --json the whole record) on stdout; the exit code."""
    from .cli import _exit_code, _json_default

    if as_json:
        sys.stdout.write(json.dumps(outcome.to_dict(), default=_json_default) + "\n")
        sys.stdout.flush()
    else:
        Console(highlight=False).print(Markdown(outcome.final_response))
    return _exit_code(outcome.run)

