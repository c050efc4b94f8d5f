"""Watching a run in the terminal: a live rich display, plain log lines, the end summary.

All three are event subscribers (`Executor.subscribe`). The live display keeps a small view
of the run (`RunView`) updated by events in the executor's loop and redrawn by rich's own
refresh thread, so a slow terminal never slows the run; a lock keeps the two apart.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .events import Event
from .plan import Plan
from .results import RunResult

__all__ = ["RunView", "LiveProgress", "LinePrinter", "make_progress", "summary_rows",
           "print_summary", "plan_phases"]

#: Above this many tasks the ETA uses a work/slots estimate instead of a re-simulation.
_SIMULATE_ETA_LIMIT = 2000
#: The ETA is re-simulated at most this often (seconds); in between it counts down.
_ETA_EVERY = 0.5


@dataclass(slots=True)
class _Running:
    pool: str
    kind: str
    attempt: int
    started: float
    message: str = ""


@dataclass(slots=True)
class RunView:
    """What the terminal shows, folded from events. Pure data: no terminal, no clock calls
    except through `clock`, so it can be read from rich's refresh thread under `lock`."""

    plan: Plan
    strategy: str | None = None
    max_workers: int | None = None
    clock: Callable[[], float] = time.time
    started_at: float | None = None
    run_id: str | None = None
    finished: bool = False
    status: dict[str, str] = field(default_factory=dict)
    running: dict[str, _Running] = field(default_factory=dict)
    busy_done: float = 0.0  # seconds of finished attempts
    observed: dict[str, float] = field(default_factory=dict)  # succeeded task -> last attempt
    cost_usd: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _version: int = 0  # bumped by every event that changes what is left to do
    _eta_at: float | None = None  # time of the latest such event
    _eta: float | None = None  # seconds left, as of _eta_at_computed
    _eta_at_computed: float = 0.0
    _eta_version: int = -1
    _eta_wall: float = 0.0  # clock time of the last re-simulation

    def __post_init__(self) -> None:
        self.status = {t.id: "pending" for t in self.plan.tasks}

    def mark_succeeded(self, task_ids: Iterable[str]) -> None:
        """Tasks that succeeded before this process started watching (a resumed run)."""
        with self.lock:
            for tid in task_ids:
                if tid in self.status:
                    self.status[tid] = "succeeded"
            self._version += 1

    # -- folding events -------------------------------------------------------------------
    def apply(self, event: Event) -> None:
        with self.lock:
            self._apply(event)

    def _apply(self, e: Event) -> None:
        k, t = e.kind, e.task_id
        if k == "run_started":
            self.started_at = e.time
            self.run_id = e.run_id
        elif k == "run_finished":
            self.finished = True
        elif t is None or t not in self.status:
            return
        elif k == "task_queued":
            self.status[t] = "queued"
        elif k == "task_started":
            task = self.plan.task(t)
            self.status[t] = "running"
            model = getattr(task, "model", None)  # LLM tasks: show which model works
            agent = f"{task.kind}:{model}" if model else task.kind
            self.running[t] = _Running(task.pool, agent, e.attempt or 1, e.time)
        elif k == "task_progress":
            if t in self.running:
                self.running[t].message = e.message or ""
        elif k in ("task_succeeded", "task_retrying", "task_failed", "task_cancelled"):
            r = self.running.pop(t, None)
            data = e.data or {}
            if r is not None:  # its time waiting for a shared model is not work
                self.busy_done += max(0.0, e.time - r.started - float(data.get("waited") or 0))
            if k == "task_succeeded":
                self.status[t] = "succeeded"
                self.observed[t] = float(data.get("duration", 0.0 if r is None else
                                                  e.time - r.started))
                self.cost_usd += float(data.get("cost_usd") or 0.0)
            elif k == "task_retrying":
                self.status[t] = "retrying"
            elif k == "task_failed":
                self.status[t] = "failed"
            else:
                self.status[t] = "cancelled"
        elif k == "task_skipped":
            self.status[t] = "skipped"
        if k != "task_progress":
            self._eta_at = e.time
            self._version += 1  # the ETA is re-simulated lazily, at the next redraw

    # -- derived figures ------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        out = {"done": 0, "running": 0, "queued": 0, "failed": 0, "skipped": 0}
        for s in self.status.values():
            if s == "succeeded":
                out["done"] += 1
            elif s == "running":
                out["running"] += 1
            elif s in ("failed", "cancelled"):
                out["failed"] += 1
            elif s == "skipped":
                out["skipped"] += 1
            else:  # pending, queued, retrying: still to run
                out["queued"] += 1
        return out

    def elapsed(self, now: float) -> float:
        return 0.0 if self.started_at is None else max(0.0, now - self.started_at)

    def speed_ratio(self) -> float:
        """Observed duration / estimate over succeeded tasks: how wrong the estimates are."""
        est = sum(self.plan.task(t).estimated_seconds for t in self.observed)
        return (sum(self.observed.values()) / est) if est > 0 and self.observed else 1.0

    def live_speedup(self, now: float) -> float:
        wall = self.elapsed(now)
        work = self.busy_done + sum(max(0.0, now - r.started) for r in self.running.values())
        return work / wall if wall > 0.05 else 0.0

    def pool_use(self) -> dict[str, tuple[int, int | None]]:
        """pool -> (running now, slots or None when the pool has no limit)."""
        use = {name: 0 for name in self.plan.all_pools()}
        for r in self.running.values():
            use[r.pool] = use.get(r.pool, 0) + 1
        pools = self.plan.all_pools()
        return {name: (n, pools[name].max_concurrent if name in pools else None)
                for name, n in use.items()}

    def eta(self, now: float) -> float | None:
        """Seconds until the run ends, from estimates corrected by observed durations.

        Call it without holding `lock`: the re-simulation runs outside the lock, so the
        executor's loop never waits for it, and runs at most every `_ETA_EVERY` seconds.
        """
        with self.lock:
            if self.finished or self.started_at is None:
                return 0.0 if self.finished else None
            stale = self._eta is None or self._eta_version != self._version
            if stale and (self._eta is None or now - self._eta_wall >= _ETA_EVERY):
                at = self._eta_at or now
                version, left, slots = self._version, self._work_left(at), self._slots()
            else:
                version = None
        if version is not None:
            estimate = self._simulate_left(left, slots)
            with self.lock:
                self._eta, self._eta_at_computed, self._eta_version = estimate, at, version
                self._eta_wall = now
        with self.lock:
            if self._eta is None:
                return None
            return max(0.0, self._eta - (now - self._eta_at_computed))

    def _slots(self) -> int:
        return sum(n or 1 for _, n in self.pool_use().values()) or 1

    def _work_left(self, at: float) -> dict[str, float]:
        ratio = self.speed_ratio()
        left: dict[str, float] = {}
        for task in self.plan.tasks:
            s = self.status[task.id]
            expected = task.estimated_seconds * ratio
            if s == "running":
                r = self.running[task.id]
                left[task.id] = max(expected - (at - r.started), 0.05 * expected)
            elif s in ("pending", "queued", "retrying"):
                left[task.id] = expected
            else:
                left[task.id] = 0.0
        return left

    def _simulate_left(self, left: dict[str, float], slots: int) -> float:
        if len(self.plan.tasks) > _SIMULATE_ETA_LIMIT:
            return sum(left.values()) / slots
        # Re-simulating the rest with the real scheduler respects dependencies and pool
        # limits, which a plain "work / workers" guess gets badly wrong on chains.
        from .simulate import simulate

        sim = simulate(self.plan, strategy=self.strategy,  # type: ignore[arg-type]
                       max_workers=self.max_workers, duration=left)
        return sim.makespan


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None or math.isinf(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class LiveProgress:
    """The live terminal display (rich `Live`), redrawn a few times a second.

    Use as a subscriber between `start()` and `stop()`; `stop()` removes the live area so
    the summary table printed next is the last thing on screen.
    """

    def __init__(self, plan: Plan, console: Console, *, strategy: str | None = None,
                 max_workers: int | None = None, refresh_per_second: float = 4,
                 max_rows: int = 12, already_succeeded: Iterable[str] = ()) -> None:
        self.view = RunView(plan, strategy=strategy, max_workers=max_workers)
        self.view.mark_succeeded(already_succeeded)
        self.console = console
        self.max_rows = max_rows
        self._live = Live(console=console, refresh_per_second=refresh_per_second,
                          transient=True, get_renderable=self._render, redirect_stdout=False,
                          redirect_stderr=False)

    def __call__(self, event: Event) -> None:
        self.view.apply(event)
        if event.kind in ("task_failed", "task_retrying"):
            # Failures deserve a line that stays on screen after the live area goes.
            what = ("✗ {} failed" if event.kind == "task_failed"
                    else "↻ {} failed, retrying as attempt " + str(event.attempt))
            self._live.console.print(f"{what.format(event.task_id)}: {_short(event.message)}",
                                     markup=False, highlight=False)

    def start(self) -> None:
        self._live.start()

    def stop(self) -> None:
        self._live.stop()

    def _render(self) -> Group:
        now = self.view.clock()
        eta = self.view.eta(now)  # outside the lock: it may re-simulate the plan
        with self.view.lock:
            return self._render_locked(now, eta)

    def _render_locked(self, now: float, eta: float | None) -> Group:
        v = self.view
        c = v.counts()
        total = len(v.status)
        head = Text()
        head.append(f"{v.plan.name}  ", style="bold")
        if v.run_id is not None:  # what `resume` needs if this process dies
            head.append(f"run {v.run_id}  ", style="dim")
        head.append(f"{c['done']}/{total} done", style="green")
        head.append(f"  {c['running']} running  {c['queued']} queued  ")
        head.append(f"{c['failed']} failed", style="red" if c["failed"] else "")
        head.append(f"  {c['skipped']} skipped", style="magenta" if c["skipped"] else "")
        stats = Text(
            f"elapsed {_fmt_seconds(v.elapsed(now))}  ETA {_fmt_seconds(eta)}  "
            f"speedup {v.live_speedup(now):.2f}x  cost ${v.cost_usd:.4f}"
        )
        pools = Text("pools: " + "  ".join(
            f"{name} {n}/{slots if slots else '∞'}" for name, (n, slots) in v.pool_use().items()
        ))
        table = Table(box=None, pad_edge=False, show_edge=False, expand=False)
        for col in ("task", "pool", "agent", "elapsed", "progress"):
            table.add_column(col, no_wrap=True, overflow="ellipsis",
                             max_width=50 if col == "progress" else 32)
        rows = sorted(v.running.items(), key=lambda kv: kv[1].started)
        for tid, r in rows[: self.max_rows]:
            attempt = f" (try {r.attempt})" if r.attempt > 1 else ""
            table.add_row(tid + attempt, r.pool, r.kind, _fmt_seconds(now - r.started),
                          r.message)
        parts: list[Any] = [head, stats, pools, table]
        if len(rows) > self.max_rows:
            parts.append(Text(f"… and {len(rows) - self.max_rows} more running"))
        return Group(*parts)


class LinePrinter:
    """Plain progress lines on stderr (one per transition worth a human's attention), for
    logs and pipes where a redrawn display would be noise. Colour only on a terminal; to a
    file or pipe the lines are written as they are, which is also ~10x cheaper than rich's
    markup rendering on plans with thousands of tasks."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._plain = not console.is_terminal

    def __call__(self, event: Event) -> None:
        line = self.line(event)
        if line is None:
            return
        mark, text = line
        if self._plain:
            self.console.file.write(f"{mark} {text}\n")
            self.console.file.flush()
        else:
            colour = _MARK_COLOURS.get(mark, "")
            self.console.print(Text(mark, style=colour) + Text(f" {text}"), highlight=False)

    @staticmethod
    def line(event: Event) -> tuple[str, str] | None:
        """(mark, text) for an event worth a line, else None."""
        k = event.kind
        t = event.task_id
        if k == "run_started":
            data = event.data or {}
            again = " (resumed)" if data.get("resumed") else ""
            return "●", f"run {event.run_id}{again}: {data.get('tasks', '?')} task(s)"
        if k == "task_started":
            return "▶", f"{t} started (attempt {event.attempt})"
        if k == "task_succeeded":
            data = event.data or {}
            if data.get("cached"):
                return "✓", f"{t} succeeded (cached: not run again)"
            return "✓", f"{t} succeeded in {data.get('duration', 0.0):.2f}s"
        if k == "task_retrying":
            delay = (event.data or {}).get("delay_seconds", 0)
            return "↻", (f"{t} failed, retry {event.attempt} in {delay:.1f}s: "
                         f"{_short(event.message)}")
        if k == "task_failed":
            return "✗", f"{t} failed: {_short(event.message)}"
        if k == "task_skipped":
            return "-", f"{t} skipped: {event.message or ''}"
        if k == "task_cancelled":
            return "■", f"{t} cancelled"
        if k == "task_progress":
            return " ", f"{t}: {event.message or ''}"
        return None


_MARK_COLOURS = {"●": "bold", "▶": "cyan", "✓": "green", "↻": "yellow", "✗": "red",
                 "-": "magenta", "■": "red"}


def make_progress(plan: Plan, console: Console, *, strategy: str | None = None,
                  max_workers: int | None = None,
                  already_succeeded: Iterable[str] = ()) -> LiveProgress | LinePrinter:
    """The live display on a terminal, plain lines otherwise (CI logs, pipes, files).

    `already_succeeded`: for `resume`, the tasks a previous process finished."""
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveProgress(plan, console, strategy=strategy, max_workers=max_workers,
                            already_succeeded=already_succeeded)
    return LinePrinter(console)


def _short(text: str | None, limit: int = 300) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the end-of-run summary ---------------------------------------------------------------
def plan_phases(plan: Plan, strategy: str) -> tuple[str, int]:
    """("stages", n) for a pipeline, else ("phases", dependency levels)."""
    if strategy == "pipeline" and plan.stage_order():
        return "stages", len(plan.stage_order())
    if strategy == "sequential":
        return "phases", len(plan.tasks)
    level: dict[str, int] = {}
    for task in _topological(plan):
        deps = plan.task(task).depends_on
        level[task] = 1 + max((level[d] for d in deps), default=0)
    return "phases", max(level.values(), default=0)


def _topological(plan: Plan) -> list[str]:
    from .metrics import _topological as topo

    return topo(plan)


def summary_rows(result: RunResult | dict[str, Any], plan: Plan | None = None) -> list[
        tuple[str, str]]:
    """The seeds' summary fields as (label, value) rows, from a result or its JSON dict."""
    d = result.to_dict() if isinstance(result, RunResult) else result
    tasks = d["tasks"]
    n = len(tasks)
    counts = d.get("counts") or {}
    ok = counts.get("succeeded", sum(1 for t in tasks.values() if t["status"] == "succeeded"))
    failed = counts.get("failed", 0)
    makespan = float(d["makespan_seconds"])
    serial = float(d["serial_seconds"])
    rows = [
        ("tasks", str(n)),
        ("succeeded", str(ok)),
        ("failed", str(failed)),
    ]
    for status in ("skipped", "cancelled"):
        if counts.get(status):
            rows.append((status, str(counts[status])))
    cached = sum(1 for t in tasks.values() if t.get("cached"))
    if cached:
        rows.append(("served from the cache", f"{cached} of {ok} succeeded"))
    rows += [
        ("success rate", f"{(ok / n * 100) if n else 100:.1f}%"),
        ("makespan", f"{makespan:.2f}s"),
        ("serial estimate", f"{serial:.2f}s"),
        ("time saved", f"{max(0.0, serial - makespan):.2f}s"
                       + (f" ({max(0.0, serial - makespan) / serial * 100:.1f}%)"
                          if serial > 0 else "")),
        ("speedup", f"{float(d['speedup']):.2f}x"),
        ("efficiency (bound / makespan)", f"{float(d['efficiency']) * 100:.0f}%"),
    ]
    if plan is not None:
        label, count = plan_phases(plan, d.get("strategy") or "dependency")
        rows.append((label, str(count)))
    rows.append(("max parallel", str(d["max_parallel"])))
    cost = float(d.get("cost_usd") or 0.0) or sum(
        float(t.get("cost_usd") or 0.0) for t in tasks.values())
    usage = d.get("usage") or {}
    if usage.get("input_tokens") or usage.get("output_tokens"):
        rows.append(("LLM tokens (in/out)",
                     f"{usage.get('input_tokens', 0)}/{usage.get('output_tokens', 0)}"))
    spent = f"${cost:.4f}" if cost else "$0 (no priced usage)"
    if d.get("budget_usd") is not None:
        spent += f" of ${float(d['budget_usd']):g} budget"
    rows.append(("cost", spent))
    cp = list(d.get("critical_path") or [])
    rows.append(("critical path",
                 f"{float(d['critical_path_seconds']):.2f}s, {len(cp)} task(s): "
                 + " -> ".join(cp[:8]) + (" …" if len(cp) > 8 else "")))
    return rows


def print_summary(result: RunResult, console: Console, plan: Plan | None = None) -> None:
    colour = {"succeeded": "green", "partial": "yellow"}.get(result.status, "red")
    table = Table(title=f"run {result.run_id}: [{colour}]{result.status}[/]", show_header=False,
                  title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, value in summary_rows(result, plan):
        table.add_row(label, Text(value))
    console.print(table)
    if result.reason and result.status != "succeeded":
        console.print(f"reason: {result.reason}", markup=False)
    if result.rollback is not None:
        removed, restored = result.rollback.get("removed", []), result.rollback.get("restored", [])
        console.print(f"workspace rolled back to its last checkpoint (--rollback-on-failure): "
                      f"{_files(removed, 'removed')}, {_files(restored, 'restored')}",
                      markup=False)


def _files(names: list[str], what: str) -> str:
    shown = ", ".join(names[:5]) + (" …" if len(names) > 5 else "")
    return f"{len(names)} file(s) {what}" + (f" ({shown})" if names else "")
