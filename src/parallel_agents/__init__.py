"""parallel-agents: run many AI-agent tasks in parallel, fast, cheaply and without losing work.

    import parallel_agents as pa

    plan = pa.Plan(tasks=[
        pa.Task(id="schema", run=design_schema),
        pa.Task(id="backend", run=build_backend, depends_on=["schema"], priority="high"),
    ])
    result = pa.run(plan)
    print(result.status, result.makespan_seconds, result.tasks["backend"].output)
"""

from ._exceptions import (
    CycleError,
    NonRetryableError,
    ParallelAgentsError,
    PlanError,
    PlanProblem,
    RunLockedError,
    StoreError,
    TaskError,
    TaskTimeout,
    UsageError,
)
from .agents import Agent, TaskContext, TaskOutput
from .agents.tools import tool
from .events import Event, EventBus
from .executor import Executor, run
from .plan import Plan, Pool, Task
from .results import AttemptRecord, Prepaid, RunResult, TaskResult
from .roles import Role
from .simulate import Simulation, simulate

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AttemptRecord",
    "CycleError",
    "Event",
    "EventBus",
    "Executor",
    "NonRetryableError",
    "ParallelAgentsError",
    "Plan",
    "PlanError",
    "PlanProblem",
    "Pool",
    "Prepaid",
    "Role",
    "RunLockedError",
    "RunResult",
    "Simulation",
    "StoreError",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskOutput",
    "TaskResult",
    "TaskTimeout",
    "UsageError",
    "run",
    "simulate",
    "tool",
]

# Tracebacks and reprs read `parallel_agents.Plan`, not the private module it lives in.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or callable(_obj):
        try:
            _obj.__module__ = "parallel_agents"
        except (AttributeError, TypeError):
            pass
del _name, _obj
