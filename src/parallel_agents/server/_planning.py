"""Request texts -> executions: the `Planner` seam and its coordinator implementation.

The gateway does not plan by itself. A `Planner` turns `message` (from
`POST /api/execute-parallel` or `POST /api/chat`) into a `Planned`: the plan to run, the
coordinator's serial/parallel decision, and how to run it. `CoordinatorPlanner` is the one the
server uses: it plans with `Coordinator.plan` and runs with `Coordinator.execute` on the
gateway's own executor, so the run's events stream over SSE, it can be cancelled, and its end
brings the coordinator's `final_response` and conflicts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..executor import Executor
from ..plan import Plan
from ..results import RunResult

if TYPE_CHECKING:
    from ..coordinator import Coordinator

__all__ = ["CoordinatorPlanner", "Planned", "Planner", "RunFn"]

#: `run(executor, execution_id) -> (result, extras)`: runs the plan on the gateway's executor;
#: `extras` (e.g. `final_response`, `conflicts`) are added to the execution's result.
RunFn = Callable[[Executor, str], Awaitable[tuple[RunResult, dict[str, Any]]]]


@dataclass(frozen=True, slots=True)
class Planned:
    """A request text as planned."""

    plan: Plan
    decision: str  # "parallel" | "serial": the coordinator's judgement
    reason: str
    details: dict[str, Any] = field(default_factory=dict)  # shown to clients as `decision`
    run: RunFn | None = None  # None: the executor runs `plan` as is

    @property
    def parallel(self) -> bool:
        return self.decision == "parallel"


class Planner(Protocol):
    """Turns a request text into a plan (`Plan` or `Planned`), or None to decline.

    A plain `Plan` counts as a parallel decision; None means "not worth a parallel run".
    """

    def __call__(self, message: str, *, session_key: str | None, project: str | None,
                 force_parallel: bool) -> Awaitable[Plan | Planned | None]: ...


class CoordinatorPlanner:
    """The coordinator as the gateway's planner.

    * **coordinator** - plans requests and aggregates/synthesizes each run's results. Its own
      executor options are not used: executions run on the gateway's executor (its budget,
      backend and providers).
    * **runs_dir** - each execution's workspace is `RUNS_DIR/EXECUTION_ID`.
    """

    def __init__(self, coordinator: Coordinator,
                 runs_dir: str | Path = Path(".parallel_agents") / "runs") -> None:
        self.coordinator = coordinator
        self.runs_dir = Path(runs_dir)

    async def __call__(self, message: str, *, session_key: str | None, project: str | None,
                       force_parallel: bool) -> Planned:
        from ..coordinator import to_plan

        coordinator = self.coordinator
        decomposition = await coordinator.plan(message, force_parallel=force_parallel)
        plan = to_plan(decomposition.plan, coordinator.run_task)
        details = {"mode": decomposition.decision, "reason": decomposition.reason,
                   "source": decomposition.source, "template": decomposition.template,
                   "strategy": decomposition.strategy,
                   "repairs": [r.to_dict() for r in decomposition.repairs]}

        async def run(executor: Executor, execution_id: str) -> tuple[RunResult, dict[str, Any]]:
            if executor.workspace is None:
                # With a durable store, next to it (where the store puts plain runs too).
                store = getattr(executor, "store", None)
                root = store.runs_dir if store is not None else self.runs_dir
                executor.workspace = root / execution_id
            outcome = await coordinator.execute(decomposition, run_id=execution_id,
                                                executor=executor)
            return outcome.run, outcome.answer()  # as the run's stored result has it

        return Planned(plan=plan, decision=decomposition.decision,
                       reason=decomposition.reason, details=details, run=run)


def as_planned(value: Plan | Planned | None) -> Planned | None:
    if value is None or isinstance(value, Planned):
        return value
    return Planned(plan=value, decision="parallel", reason="planned by the server's planner")
