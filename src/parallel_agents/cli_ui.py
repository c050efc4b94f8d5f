"""CLI commands for seeing runs: `plan` (preview), `report`, `config show`; and the config and
progress wiring `run` uses. Registered on the main app by `register(app)`."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ._exceptions import ParallelAgentsError, PlanError
from .config import Config, ConfigError, effective_run_options, load_config, load_plan
from .plan import STRATEGIES, Plan
from .roles import configure_default_model

__all__ = ["register", "RunSetup", "setup_run"]

EXIT_USAGE = 2
_PREVIEW_ROWS = 40  # text previews of big plans stay readable; --json has everything
_err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOption = Annotated[Optional[str], typer.Option(
    "--config", help="Config file (parallel-agents.toml or config.json); default: "
                     "$PARALLEL_AGENTS_CONFIG, ./parallel-agents.toml, ./config.json.")]


def _fail(message: str) -> None:
    _err.print(f"error: {message}", markup=False)
    raise typer.Exit(EXIT_USAGE)


@dataclass(slots=True)
class RunSetup:
    """A plan and the options to run it with, after config, environment and CLI options."""

    plan: Plan
    config: Config
    strategy: str | None
    max_workers: int | None
    fail_fast: bool


def setup_run(plan_file: str, *, config_file: str | None, max_workers: int | None,
              strategy: str | None, fail_fast: bool | None = None) -> RunSetup:
    """Load config and plan the way `run` and `plan` both need; exits 2 with a clear message
    on any bad input."""
    if strategy is not None and strategy not in STRATEGIES:
        _fail(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    try:
        config = load_config(config_file, cli={"defaults.max_workers": max_workers,
                                               "defaults.strategy": strategy,
                                               "defaults.fail_fast": fail_fast or None})
    except ConfigError as exc:
        _fail(str(exc))
        raise AssertionError("unreachable") from None
    configure_default_model(config.get("defaults.model"))
    path = Path(plan_file)
    if not path.exists():
        _fail(f"no such plan file: {plan_file} (give a .yaml, .yml or .json plan file)")
    if path.is_dir():
        _fail(f"{plan_file} is a directory; give a .yaml, .yml or .json plan file")
    try:
        plan = load_plan(path, config)
    except PlanError as exc:
        _fail(str(exc))
        raise AssertionError("unreachable") from None
    opts = effective_run_options(config, plan)
    # A pipeline asked for on the command line is checked here, so its problems name the
    # file like every other plan problem (one in the plan file is checked on loading).
    from .executor import _check_strategy

    try:
        _check_strategy(plan, opts["strategy"].value or plan.strategy or "dependency",
                        source=plan_file)
    except ParallelAgentsError as exc:
        _fail(str(exc))
    return RunSetup(plan, config, opts["strategy"].value, opts["max_workers"].value,
                    bool(opts["fail_fast"].value))


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_command)
    app.command("report")(report_command)
    config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True,
                             add_completion=False, rich_markup_mode=None)
    config_app.command("show")(config_show_command)
    app.add_typer(config_app, name="config")


# -- plan -----------------------------------------------------------------------------------
def plan_command(
    plan_file: Annotated[str, typer.Argument(metavar="PLAN", help="A .yaml/.yml/.json plan file.")],
    show_plan: Annotated[bool, typer.Option(
        "--show-plan", help="Also print the whole validated plan (YAML).")] = False,
    max_workers: Annotated[Optional[int], typer.Option(
        "--max-workers", min=1, help="Global limit on running tasks.")] = None,
    strategy: Annotated[Optional[str], typer.Option(
        "--strategy", help="dependency | sequential | waves | pipeline.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the preview as JSON.")] = False,
    config_file: ConfigOption = None,
) -> None:
    """Preview a plan: validation, dependency graph, predicted timeline and makespan (virtual
    time, from estimated_seconds), predicted cost, serial baseline. Runs no agent."""
    from .preview import preview_plan

    setup = setup_run(plan_file, config_file=config_file, max_workers=max_workers,
                      strategy=strategy)
    data = preview_plan(setup.plan, strategy=setup.strategy, max_workers=setup.max_workers)
    if show_plan:
        data["plan"] = setup.plan.describe()
    if as_json:
        sys.stdout.write(json.dumps(data) + "\n")
        return
    out = Console(highlight=False, soft_wrap=True)
    _print_preview(out, setup.plan, data)
    if show_plan:
        out.rule("plan")
        out.print(yaml.safe_dump(setup.plan.describe(), sort_keys=False), markup=False)


def _print_preview(out: Console, plan: Plan, data: dict[str, Any]) -> None:
    pools = ", ".join(f"{n} ({p['max_concurrent'] or '∞'} slots)" for n, p in data["pools"].items())
    out.print(Text(f"plan {data['name']}: valid, {data['tasks']} tasks; pools: {pools}; "
                   f"strategy {data['strategy']}"
                   + (f"; max workers {data['max_workers']}" if data["max_workers"] else "")))
    out.print(Text("\ndependency graph (tasks on one level can run together):", style="bold"))
    for i, level in enumerate(data["levels"], 1):
        out.print(Text(f"  level {i}:"))
        for tid in level[:_PREVIEW_ROWS]:
            deps = data["dependencies"][tid]
            task = plan.task(tid)
            out.print(Text(f"    {tid} [{task.pool}, ~{task.estimated_seconds:g}s]"
                           + (f"  <- {', '.join(deps)}" if deps else "")))
        if len(level) > _PREVIEW_ROWS:
            out.print(Text(f"    … and {len(level) - _PREVIEW_ROWS} more (--json lists all)"))
    makespan = data["predicted_makespan_seconds"]
    out.print(Text("\npredicted timeline (virtual time):", style="bold"))
    width = 50
    label_w = min(32, max((len(r["task"]) for r in data["timeline"]), default=4))
    scale = width / makespan if makespan > 0 else 0
    for row in data["timeline"][:_PREVIEW_ROWS]:
        start = int(round(row["start"] * scale))
        length = max(1, int(round((row["end"] - row["start"]) * scale)))
        out.print(Text(f"  {row['task'][:label_w]:<{label_w}} |{' ' * start}{'█' * length}"
                       f"{' ' * max(0, width - start - length)}| "
                       f"{row['start']:g}s → {row['end']:g}s"))
    if len(data["timeline"]) > _PREVIEW_ROWS:
        out.print(Text(f"  … and {len(data['timeline']) - _PREVIEW_ROWS} more attempts "
                       f"(--json lists all)"))
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("predicted makespan", f"{makespan:.2f}s")
    table.add_row("serial baseline", f"{data['serial_seconds']:.2f}s")
    table.add_row("predicted speedup", f"{data['predicted_speedup']:.2f}x")
    phases = data.get("phases", data.get("stages"))
    table.add_row("stages" if "stages" in data else "phases", str(phases))
    table.add_row("critical path", f"{data['critical_path_seconds']:.2f}s: "
                  + " -> ".join(data["critical_path"]))
    cost = data["predicted_cost_usd"]
    # A long note (what the figure means, what has no price) goes under the table rather
    # than being squeezed into its right-aligned value column.
    note = data["cost_note"]
    footnote = len(note) > 40
    value = f"${cost:.4f}" if cost is not None else "n/a"
    table.add_row("predicted cost", f"{value} *" if footnote else f"{value} ({note})")
    out.print()
    out.print(table)
    if footnote:
        out.print(Text(f"* predicted cost: {note}"))


# -- report ---------------------------------------------------------------------------------
def report_command(
    ref: Annotated[str, typer.Argument(
        metavar="RUN_OR_FILE", help="A run id, or the JSON file written by `run --json`.")],
    html_file: Annotated[Optional[Path], typer.Option(
        "--html", help="Write the report as one self-contained HTML file.")] = None,
    png_file: Annotated[Optional[Path], typer.Option(
        "--png", help="Write the timeline and utilization charts as a PNG.")] = None,
    store_path: Annotated[Optional[str], typer.Option(
        "--store", help="Run store to look RUN_ID up in (default: $PARALLEL_AGENTS_STORE or "
                        ".parallel_agents/runs.db).")] = None,
) -> None:
    """Report on a run: timeline of attempts per pool, utilization, cost, what-if workers."""
    from .report import (build_report, load_run_record, register_run_loader, render_html,
                         render_png, signed_seconds)
    from .store import store_run_loader

    if not Path(ref).is_file():
        register_run_loader(store_run_loader(store_path))
    try:
        run, plan = load_run_record(ref)
        data = build_report(run, plan)
    except ParallelAgentsError as exc:
        _fail(str(exc))
        raise AssertionError("unreachable") from None
    for target in (html_file, png_file):
        if target is not None and not target.parent.exists():
            _fail(f"cannot write {target}: directory {target.parent} does not exist")
    if html_file is not None:
        html_file.write_text(render_html(data), encoding="utf-8")
        _err.print(f"wrote {html_file}", markup=False)
    if png_file is not None:
        render_png(data, png_file)
        _err.print(f"wrote {png_file}", markup=False)
    if html_file is None and png_file is None:
        out = Console(highlight=False, soft_wrap=True)
        table = Table(title=f"run {run['run_id']}: {run['status']}", show_header=False,
                      title_justify="left")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for label, value in data.rows:
            table.add_row(label, Text(value))
        out.print(table)
        ifs = Table(title=f"what if (replay of recorded durations: "
                          f"{data.replay_makespan:.2f}s)", title_justify="left")
        ifs.add_column("change")
        ifs.add_column("predicted makespan", justify="right")
        ifs.add_column("vs replay", justify="right")
        for w in data.what_ifs:
            ifs.add_row(w.label, f"{w.makespan:.2f}s",
                        signed_seconds(w.makespan - data.replay_makespan))
        out.print(ifs)
        if data.cost_by_agent:
            out.print(Text("cost per agent: " + ", ".join(
                f"{agent} ${cost:.4f}" for agent, cost in data.cost_by_agent.items())))


# -- config show ----------------------------------------------------------------------------
def config_show_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    config_file: ConfigOption = None,
) -> None:
    """Print the effective configuration: every value, where it came from, secrets masked."""
    try:
        config = load_config(config_file)
    except ConfigError as exc:
        _fail(str(exc))
        raise AssertionError("unreachable") from None
    if as_json:
        sys.stdout.write(json.dumps(config.to_dict(), default=str) + "\n")
        return
    out = Console(highlight=False, soft_wrap=True)
    out.print(Text(f"config file: {config.file or '(none found)'}"))
    shown = config.shown()
    width = max((len(k) for k in shown), default=10) + 2
    for key, setting in shown.items():
        value = "(not set)" if setting.value is None else str(setting.value)
        if key == "defaults.model" and setting.value is None:
            from .roles import DEFAULT_MODEL

            value = f"{DEFAULT_MODEL} (built in)"  # what LLM tasks naming none then use
        out.print(Text(f"{key:<{width}}{value:<28} [{setting.source}]"))
