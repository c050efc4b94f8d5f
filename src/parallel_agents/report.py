"""The run report: a Gantt timeline of attempts per pool, pool utilization, cost per agent and
"what if" predictions, as one self-contained HTML file or a PNG.

A report is rendered from a *run record*: the `RunResult.to_dict()` data (what `run --json`
prints) plus the plan as `Plan.describe()` data. Both are plain JSON, so a report can be made
long after the run, on another machine, from a file or from the durable store.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._exceptions import PlanError, UsageError
from .plan import Plan
from .progress import summary_rows
from .record_schema import RunRecord, check_run_record
from .simulate import simulate

if TYPE_CHECKING:
    from .results import RunResult

__all__ = ["load_run_record", "register_run_loader", "run_record", "ReportData", "build_report",
           "render_html", "render_png", "what_if", "signed_seconds"]

_LOADERS: list[Callable[[str], RunRecord | None]] = []

OUTCOME_COLOURS = {"succeeded": "#3a9d5d", "failed": "#d64545", "timeout": "#e08a1e",
                   "cancelled": "#8a8a8a", "interrupted": "#8a8a8a", "running": "#5b8def"}
CRITICAL_COLOUR = "#1f2d7a"


def register_run_loader(loader: Callable[[str], RunRecord | None]) -> None:
    """Let another source (the durable store) resolve a run reference that is not a file.

    The loader returns (run_dict, plan_dict), or None when it does not know `ref`.
    """
    _LOADERS.append(loader)


def run_record(result: RunResult, plan: Plan | None, *, max_workers: int | None = None
               ) -> dict[str, Any]:
    """The complete run record `report` reads: `result.to_dict()` plus the plan and the global
    worker limit, which a result alone does not carry (what `run --json` prints). Without a
    plan (a resumed run of Python functions) the record has none."""
    record = result.to_dict()
    record["max_workers"] = max_workers
    if plan is not None:
        record["plan"] = plan.describe()
    return record


def load_run_record(ref: str) -> RunRecord:
    """(run_dict, plan_dict) for a run id or a JSON file written by `run --json`."""
    path = Path(ref)
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read run record {ref}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise UsageError(f"{ref} is not a run record: invalid JSON at line {exc.lineno} "
                             f"column {exc.colno} ({exc.msg}); give the file `run --json` "
                             f"wrote") from None
        return check_run_record(data, ref)
    for loader in _LOADERS:
        found = loader(ref)
        if found is not None:
            return check_run_record({**found[0], "plan": found[1]}, ref)
    raise UsageError(f"no run file or known run {ref!r}: give the JSON file written by "
                     f"`parallel-agents run PLAN --json > run.json`, or a run id from the store")


# -- the report's figures (pure) ------------------------------------------------------------
@dataclass(slots=True)
class Bar:
    task: str
    pool: str
    attempt: int
    start: float  # seconds from run start
    end: float
    outcome: str
    critical: bool


@dataclass(slots=True)
class WhatIf:
    pool: str
    slots_now: int | None
    slots: int | None
    makespan: float

    @property
    def label(self) -> str:
        if self.slots_now is None and self.slots is None:
            return f"{self.pool}: twice the workers"
        now = "∞" if self.slots_now is None else str(self.slots_now)
        new = "∞" if self.slots is None else str(self.slots)
        return f"{self.pool}: {now} → {new} workers"


@dataclass(slots=True)
class ReportData:
    run: dict[str, Any]
    plan: dict[str, Any]
    rows: list[tuple[str, str]]
    bars: list[Bar]
    lanes: list[tuple[str, str]]  # (pool, task) in display order
    utilization: dict[str, float]
    concurrency: list[tuple[float, int]]  # step function: (time, running from then on)
    cost_by_agent: dict[str, float]
    cost_by_task: dict[str, float]
    replay_makespan: float
    what_ifs: list[WhatIf] = field(default_factory=list)


#: The task fields that shape a schedule; the rest (what runs: command, agent, prompt, model,
#: ...) is left out of the simulated plan, whose tasks all get a placeholder command instead.
_SCHEDULE_FIELDS = ("id", "pool", "priority", "depends_on", "timeout_sec", "max_retries",
                    "retry_backoff_sec", "estimated_seconds", "stage")


def _sim_plan(plan_dict: dict[str, Any], pools: dict[str, Any] | None = None) -> Plan:
    """A Plan rebuilt from its JSON form for simulation only.

    Only scheduling fields are kept and every task gets a placeholder command that is never
    run: a callable (`run`) is not serialisable, and an LLM task (`agent`/`prompt`) would need
    its roles, providers and prices, none of which matter to a replay.
    """
    tasks: Any = plan_dict.get("tasks") or []
    if isinstance(tasks, list):
        # (a `tasks` that is no list, or a task that is no mapping, goes to from_dict as it
        # is: its message says where the plan is wrong)
        tasks = [{**{k: v for k, v in raw.items() if k in _SCHEDULE_FIELDS},
                  "command": ["(simulated)"]} if isinstance(raw, dict) else raw
                 for raw in tasks]
    data = {k: v for k, v in plan_dict.items() if k in ("name", "max_workers", "strategy",
                                                         "stages")}
    data["pools"] = pools if pools is not None else plan_dict.get("pools") or {}
    data["tasks"] = tasks
    try:
        return Plan.from_dict(data, allow_empty=True)  # a record of a run of nothing
    except PlanError as exc:
        raise UsageError(f"the run record's plan is invalid ({exc}); if the record was edited, "
                         f"write it again with `parallel-agents run PLAN --json`") from None


def _busy(attempt: dict[str, Any]) -> float:
    """An attempt's recorded time at work: its duration less what it waited for a shared
    resource (`waited_seconds`)."""
    end = attempt.get("finished_at") or attempt["started_at"]
    return max(0.0, end - attempt["started_at"] - float(attempt.get("waited_seconds") or 0))


def _replay_inputs(run: dict[str, Any], plan: Plan) -> tuple[
        Callable[[str, int], float], dict[str, int]]:
    """Recorded durations per attempt, and how many attempts failed, for a faithful replay."""
    history = {tid: t.get("history") or [] for tid, t in run["tasks"].items()}

    def duration(task_id: str, attempt: int) -> float:
        h = [a for a in history.get(task_id, []) if a.get("finished_at") is not None]
        if not h:
            return plan.task(task_id).estimated_seconds
        return _busy(h[min(attempt, len(h)) - 1])

    failing = {}
    for tid, h in history.items():
        failed = sum(1 for a in h if a.get("outcome") != "succeeded")
        if failed:
            failing[tid] = failed
    return duration, failing


def what_if(run: dict[str, Any], plan_dict: dict[str, Any]) -> tuple[float, list[WhatIf]]:
    """(replayed makespan, predictions) with fewer/more workers in each pool, simulated with
    the recorded durations on copies of the plan."""
    base = _sim_plan(plan_dict)
    duration, failing = _replay_inputs(run, base)
    strategy = run.get("strategy")
    max_workers = run.get("max_workers")

    def predict(p: Plan) -> float:
        return simulate(p, strategy=strategy, max_workers=max_workers, duration=duration,
                        failing_attempts=failing).makespan

    replay = predict(base)
    used = {t.pool for t in base.tasks}
    out: list[WhatIf] = []
    for name, pool in base.all_pools().items():
        if name not in used:
            continue
        pools = {n: p.model_dump() for n, p in base.all_pools().items()}
        now = pool.max_concurrent
        options: list[int | None] = []
        if now is not None:
            if now > 1:
                options.append(now - 1)
            options += [now + 1, now * 2]
        for slots in dict.fromkeys(options):
            changed = dict(pools)
            changed[name] = {**pools[name], "max_concurrent": slots}
            out.append(WhatIf(name, now, slots, predict(_sim_plan(plan_dict, changed))))
    if max_workers:
        for limit in dict.fromkeys(n for n in (max_workers - 1, max_workers + 1,
                                                max_workers * 2) if n >= 1):
            makespan = simulate(base, strategy=strategy, max_workers=limit, duration=duration,
                                failing_attempts=failing).makespan
            out.append(WhatIf("all pools (--max-workers)", max_workers, limit, makespan))
    doubled = {n: {**p.model_dump(), "max_concurrent": p.max_concurrent * 2}
               if p.max_concurrent else p.model_dump() for n, p in base.all_pools().items()}
    out.append(WhatIf("every pool", None, None, predict(_sim_plan(plan_dict, doubled))))
    return replay, out


def build_report(run: dict[str, Any], plan_dict: dict[str, Any]) -> ReportData:
    plan = _sim_plan(plan_dict)
    t0 = float(run["started_at"])
    critical = set(run.get("critical_path") or [])
    bars: list[Bar] = []
    lanes: list[tuple[str, str]] = []
    order = {t.id: i for i, t in enumerate(plan.tasks)}
    by_pool: dict[str, list[str]] = {}
    for tid in sorted(run["tasks"], key=lambda t: order.get(t, 1 << 30)):
        pool = run["tasks"][tid].get("pool") or (plan.task(tid).pool if tid in order else "?")
        by_pool.setdefault(pool, []).append(tid)
    for pool in sorted(by_pool):
        tids = sorted(by_pool[pool], key=lambda t: (run["tasks"][t].get("started_at") or 1e30,
                                                     order.get(t, 0)))
        for tid in tids:
            lanes.append((pool, tid))
            for a in run["tasks"][tid].get("history") or []:
                end = a.get("finished_at") or run.get("finished_at") or a["started_at"]
                bars.append(Bar(tid, pool, int(a["attempt"]), a["started_at"] - t0, end - t0,
                                a.get("outcome") or "running", tid in critical))
    points: list[tuple[float, int]] = []
    for b in bars:
        points += [(b.start, 1), (b.end, -1)]
    points.sort(key=lambda p: (p[0], p[1]))
    steps: list[tuple[float, int]] = [(0.0, 0)]
    level = 0
    # Changes closer together than this are one step: a task starting a few milliseconds
    # after another ended is "the slot stayed busy", not a dip to zero worth drawing.
    blur = float(run["makespan_seconds"]) / 500
    for when, delta in points:
        level += delta
        if steps and when - steps[-1][0] <= blur:
            steps[-1] = (steps[-1][0], level)
        else:
            steps.append((when, level))
    kind_of = {t.id: _agent_name(raw) for t, raw in zip(plan.tasks, plan_dict.get("tasks") or [])}
    cost_by_task = {tid: float(t.get("cost_usd") or 0.0) for tid, t in run["tasks"].items()
                    if t.get("cost_usd")}
    cost_by_agent: dict[str, float] = {}
    for tid, cost in cost_by_task.items():
        agent = kind_of.get(tid, "unknown")
        cost_by_agent[agent] = cost_by_agent.get(agent, 0.0) + cost
    replay, ifs = what_if(run, plan_dict)
    return ReportData(run=run, plan=plan_dict, rows=summary_rows(run, plan), bars=bars,
                      lanes=lanes, utilization=dict(run.get("pool_utilization") or {}),
                      concurrency=steps, cost_by_agent=cost_by_agent, cost_by_task=cost_by_task,
                      replay_makespan=replay, what_ifs=ifs)


def _agent_name(raw_task: dict[str, Any]) -> str:
    for key in ("agent", "model", "provider"):
        if raw_task.get(key):
            return str(raw_task[key])
    return "command" if raw_task.get("command") else "function"


def signed_seconds(delta: float) -> str:
    """A what-if's change against the replay, e.g. "+1.20s", "-0.35s"; a change that rounds
    to nothing is "0.00s", never "-0.00s" (which reads as a tiny gain that is not there)."""
    text = f"{delta:+.2f}s"
    return "0.00s" if text in ("+0.00s", "-0.00s") else text


#: Timeline lanes drawn in the HTML report (22 px each); the task table still lists every task.
HTML_LANES = 200
#: Timeline lanes drawn in the PNG (~32 px each at 100 dpi: at most ~2,400 px tall in all).
PNG_LANES = 60


def shown_lanes(r: ReportData, limit: int) -> tuple[list[tuple[str, str]], int]:
    """The timeline lanes to draw, in display order, and how many are left out.

    One lane per task makes a 2,000-task run an image tens of thousands of pixels tall, so
    at most `limit` are drawn: the critical path's tasks (what set the makespan), then the
    earliest started of the rest.
    """
    if len(r.lanes) <= limit:
        return list(r.lanes), 0
    critical = set(r.run.get("critical_path") or [])
    tasks = r.run["tasks"]

    def rank(i: int) -> tuple[bool, float, int]:
        tid = r.lanes[i][1]
        started = tasks[tid].get("started_at")
        return tid not in critical, math.inf if started is None else started, i

    keep = sorted(sorted(range(len(r.lanes)), key=rank)[:limit])
    return [r.lanes[i] for i in keep], len(r.lanes) - limit


# -- HTML -----------------------------------------------------------------------------------
def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _gantt_svg(r: ReportData) -> str:
    makespan = max([float(r.run["makespan_seconds"])] + [b.end for b in r.bars] + [1e-9])
    lanes, hidden = shown_lanes(r, HTML_LANES)
    label_w, width, row_h, top = 220, 900, 22, 24
    plot_w = width - label_w - 20
    height = top + row_h * len(lanes) + 30 + (row_h if hidden else 0)
    x = lambda s: label_w + plot_w * s / makespan  # noqa: E731 - a local scale, read inline
    lane_y = {tid: top + i * row_h for i, (_, tid) in enumerate(lanes)}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="timeline of attempts per pool">']
    prev_pool = None
    for pool, tid in lanes:
        y = lane_y[tid]
        if pool != prev_pool:
            parts.append(f'<line x1="0" x2="{width}" y1="{y}" y2="{y}" stroke="#ccc"/>')
            prev_pool = pool
        weight = "bold" if tid in r.run.get("critical_path", []) else "normal"
        parts.append(f'<text x="4" y="{y + 15}" font-size="12" font-weight="{weight}">'
                     f'{_esc(pool)} / {_esc(tid)}</text>')
        status = r.run["tasks"][tid].get("status")
        if not r.run["tasks"][tid].get("history"):
            parts.append(f'<text x="{label_w + 4}" y="{y + 15}" font-size="11" fill="#777" '
                         f'font-style="italic">{_esc(status)}, never started</text>')
    for b in r.bars:
        if b.task not in lane_y:
            continue
        y = lane_y[b.task] + 3
        w = max(1.0, x(b.end) - x(b.start))
        stroke = (f' stroke="{CRITICAL_COLOUR}" stroke-width="3"' if b.critical
                  and b.outcome == "succeeded" else "")
        dash = ' stroke-dasharray="4 2" stroke="#000"' if b.attempt > 1 and not stroke else ""
        parts.append(
            f'<rect class="attempt {b.outcome}" x="{x(b.start):.1f}" y="{y}" width="{w:.1f}" '
            f'height="{row_h - 6}" fill="{OUTCOME_COLOURS.get(b.outcome, "#999")}"{stroke}{dash}>'
            f'<title>{_esc(b.task)} attempt {b.attempt}: {_esc(b.outcome)}, '
            f'{b.start:.2f}s → {b.end:.2f}s ({b.end - b.start:.2f}s)</title></rect>')
        if b.attempt > 1 or b.outcome != "succeeded":
            mark = ("✗" if b.outcome != "succeeded" else "") + (f"#{b.attempt}"
                                                                 if b.attempt > 1 else "")
            parts.append(f'<text x="{x(b.start) + 3:.1f}" y="{y + 12}" font-size="10" '
                         f'fill="#fff">{_esc(mark)}</text>')
    axis_y = top + row_h * len(lanes) + 14
    for s in _ticks(makespan):
        parts.append(f'<text x="{x(s):.1f}" y="{axis_y}" font-size="10" text-anchor="middle">'
                     f'{round(s, 6):g}s</text>')
    if hidden:
        parts.append(f'<text class="more" x="4" y="{axis_y + row_h}" font-size="12" '
                     f'font-style="italic">… {hidden} more tasks not drawn (shown: the critical '
                     f'path and the earliest started; the task table lists all)</text>')
    parts.append("</svg>")
    return "".join(parts)


def _ticks(end: float, target: int = 6) -> list[float]:
    """Round tick positions (1, 2 or 5 times a power of ten) from 0 to `end`."""
    if end <= 0:
        return [0.0]
    raw = end / target
    power = 10.0 ** math.floor(math.log10(raw))  # (a float: 10 ** 308 as an int overflows)
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [i * step for i in range(int(end / step + 1e-9) + 1)]


def _bars_svg(values: dict[str, float], unit: str, fmt: Callable[[float], str]) -> str:
    if not values:
        return "<p>none recorded</p>"
    top = max(values.values()) or 1.0
    if unit == "%":
        top = 1.0
    row_h, width = 24, 600
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{row_h * len(values) + 6}">']
    for i, (name, value) in enumerate(values.items()):
        y = i * row_h + 3
        w = 360 * value / top
        parts.append(f'<text x="0" y="{y + 14}" font-size="12">{_esc(name)}</text>'
                     f'<rect x="160" y="{y}" width="{w:.1f}" height="{row_h - 8}" fill="#5b8def"/>'
                     f'<text x="{166 + w:.1f}" y="{y + 14}" font-size="12">{_esc(fmt(value))}'
                     f'</text>')
    parts.append("</svg>")
    return "".join(parts)


def _concurrency_svg(r: ReportData) -> str:
    steps = r.concurrency
    end = max([float(r.run["makespan_seconds"])] + [s[0] for s in steps] + [1e-9])
    peak = max([n for _, n in steps] + [1])
    width, height = 900, 120
    x = lambda s: 40 + (width - 60) * s / end  # noqa: E731
    y = lambda n: height - 20 - (height - 30) * n / peak  # noqa: E731
    path = f"M{x(0):.1f},{y(0):.1f}"
    level = 0
    for when, n in steps:
        path += f" L{x(when):.1f},{y(level):.1f} L{x(when):.1f},{y(n):.1f}"
        level = n
    path += f" L{x(end):.1f},{y(level):.1f}"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
            f'<path d="{path}" fill="none" stroke="#5b8def" stroke-width="2"/>'
            f'<text x="0" y="{y(peak) + 4:.1f}" font-size="10">{peak}</text>'
            f'<text x="0" y="{y(0):.1f}" font-size="10">0</text>'
            f'<text x="{x(end):.1f}" y="{height - 4}" font-size="10" text-anchor="end">'
            f'{end:.1f}s</text></svg>')


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em;color:#222;max-width:1000px}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{padding:2px 10px;border-bottom:1px solid #eee;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.legend span{display:inline-block;margin-right:1em}.sw{width:12px;height:12px;display:inline-block;
vertical-align:middle;margin-right:4px}.better{color:#3a9d5d}.worse{color:#d64545}
"""


def _when(unix: Any) -> str:
    try:
        return datetime.fromtimestamp(float(unix), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError):
        return "at an unknown time"


def render_html(r: ReportData) -> str:
    """One self-contained HTML file: inline CSS and SVG, no scripts, no external resources."""
    run = r.run
    title = f"Run {run['run_id']} ({r.plan.get('name', 'plan')}): {run['status']}"
    rows = "".join(f"<tr><td>{_esc(k)}</td><td class=num>{_esc(v)}</td></tr>" for k, v in r.rows)
    legend = "".join(f'<span><i class=sw style="background:{c}"></i>{o}</span>'
                     for o, c in OUTCOME_COLOURS.items() if o != "interrupted")
    legend += (f'<span><i class=sw style="border:3px solid {CRITICAL_COLOUR}"></i>critical path'
               f'</span><span>#n = retry attempt n</span>')
    tasks = ""
    for pool, tid in r.lanes:
        t = run["tasks"][tid]
        tasks += (f"<tr><td>{_esc(tid)}</td><td>{_esc(pool)}</td><td>{_esc(t['status'])}</td>"
                  f"<td class=num>{t.get('attempts', len(t.get('history') or []))}</td>"
                  f"<td class=num>{sum(_busy(a) for a in t.get('history') or []):.2f}s</td>"
                  f"<td>{_esc((t.get('error') or '')[:200])}</td></tr>")
    ifs = ""
    measured = float(run["makespan_seconds"])
    for w in r.what_ifs:
        change = signed_seconds(w.makespan - r.replay_makespan)
        cls = {"-": "better", "+": "worse"}.get(change[0], "")
        ifs += (f"<tr><td>{_esc(w.label)}</td><td class=num>{w.makespan:.2f}s</td>"
                f"<td class='num {cls}'>{change}</td></tr>")
    costs = _bars_svg(r.cost_by_agent, "$", lambda v: f"${v:.4f}") if r.cost_by_agent else \
        "<p>No cost recorded: no task reported priced usage.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{_esc(title)}</h1>
<p>Strategy {_esc(run.get('strategy'))}; started {_esc(_when(run.get('started_at')))}.
{_esc(run.get('reason') or '')}</p>
<h2>Summary</h2><table>{rows}</table>
<h2>Timeline</h2><div class=legend>{legend}</div>
{_gantt_svg(r)}
<h2>Running tasks over time</h2>{_concurrency_svg(r)}
<h2>Pool utilization</h2>
{_bars_svg(r.utilization, "%", lambda v: f"{v * 100:.0f}%")}
<h2>Cost per agent</h2>{costs}
<h2>What if</h2>
<p>Predicted makespan with the recorded durations (and failures) replayed by the scheduler in
virtual time. Replay with today's pools: {r.replay_makespan:.2f}s (measured: {measured:.2f}s).</p>
<table><tr><th>change</th><th>predicted makespan</th><th>vs replay</th></tr>{ifs}</table>
<h2>Tasks</h2>
<table><tr><th>task</th><th>pool</th><th>status</th><th>attempts</th><th>busy</th><th>error</th></tr>
{tasks}</table>
</body></html>
"""


# -- PNG ------------------------------------------------------------------------------------
def render_png(r: ReportData, path: str | Path) -> None:
    """Timeline, running-task count and pool utilization in one image (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and never a GUI window from a CLI
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    lanes, hidden = shown_lanes(r, PNG_LANES)
    n = max(1, len(lanes))
    fig = plt.figure(figsize=(11, 2.6 + 0.32 * n + 2.2))
    grid = fig.add_gridspec(2, 2, height_ratios=[0.6 + 0.32 * n, 2.0], width_ratios=[3, 1.3])
    ax = fig.add_subplot(grid[0, :])
    y_of = {tid: i for i, (_, tid) in enumerate(lanes)}
    for b in r.bars:
        if b.task not in y_of:
            continue
        edge = CRITICAL_COLOUR if b.critical and b.outcome == "succeeded" else "black"
        ax.barh(y_of[b.task], b.end - b.start, left=b.start, height=0.6,
                color=OUTCOME_COLOURS.get(b.outcome, "#999"), edgecolor=edge,
                linewidth=2.5 if edge == CRITICAL_COLOUR else 0.5,
                hatch="//" if b.attempt > 1 else None)
        if b.attempt > 1 or b.outcome != "succeeded":
            ax.text(b.start, y_of[b.task], (" ✗" if b.outcome != "succeeded" else " ")
                    + (f"#{b.attempt}" if b.attempt > 1 else ""), va="center", fontsize=8,
                    color="white")
    ax.set_yticks(range(len(lanes)), [f"{p} / {t}" for p, t in lanes], fontsize=8)
    for label, (_, tid) in zip(ax.get_yticklabels(), lanes):
        if tid in (r.run.get("critical_path") or []):
            label.set_fontweight("bold")
    ax.invert_yaxis()
    ax.set_xlabel("seconds since run start")
    if hidden:
        # The whole run's time axis, so the lanes drawn show where they fall in it.
        ax.set_xlim(0, max([float(r.run["makespan_seconds"])] + [b.end for b in r.bars]
                           + [1e-9]))
        ax.set_xlabel(f"seconds since run start   (… {hidden} more tasks not drawn: shown are "
                      f"the critical path and the earliest started)")
    ax.set_title(f"run {r.run['run_id']}: {r.run['status']}, makespan "
                 f"{float(r.run['makespan_seconds']):.2f}s", loc="left", fontsize=10)
    handles = [Patch(color=c, label=o) for o, c in OUTCOME_COLOURS.items()
               if o in {b.outcome for b in r.bars}]
    handles.append(Patch(facecolor="white", edgecolor=CRITICAL_COLOUR, linewidth=2.5,
                         label="critical path"))
    ax.legend(handles=handles, fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0),
              ncol=len(handles), frameon=False)

    ax2 = fig.add_subplot(grid[1, 0])
    xs = [t for t, _ in r.concurrency]
    ys = [n for _, n in r.concurrency]
    ax2.step(xs, ys, where="post")
    ax2.set_ylabel("running tasks")
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_xlabel("seconds")
    ax3 = fig.add_subplot(grid[1, 1])
    names = list(r.utilization)
    ax3.barh(names, [r.utilization[k] * 100 for k in names], color="#5b8def")
    ax3.set_xlim(0, 100)
    ax3.set_xlabel("pool utilization %")
    ax3.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
