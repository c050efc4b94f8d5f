"""The shape of a run record, checked before a report is drawn from it.

A run record is JSON from outside the process: a file `run --json` wrote, possibly edited by
hand or cut short, or a row of the store. The report does arithmetic on its timestamps and
feeds its limits to the scheduler, so a string where a number belongs would surface as a
traceback deep in the drawing code. Checking the fields the report reads up front turns that
into one message naming the field. Unknown fields are allowed: records carry more than the
report needs (outputs, files, a coordinator's decision), and newer versions may add some.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._exceptions import UsageError
from .plan import Strategy

__all__ = ["check_run_record", "RunRecord", "MISSING_PLAN_HINT"]

RunRecord = tuple[dict[str, Any], dict[str, Any]]

#: How to get a record the report can read, for records without a usable `plan`.
MISSING_PLAN_HINT = (
    "the report needs the plan to lay out and replay the run. Use the file "
    "`parallel-agents run PLAN --json` writes (it embeds `plan` and `max_workers`); in Python, "
    "write `parallel_agents.report.run_record(result, plan)` instead of `result.to_dict()` "
    "(or add `plan` = plan.describe() to it); or report a run from the store by its id: "
    "`parallel-agents report RUN_ID --store PATH`")

_HOW_TO_FIX = ("If the file was edited or damaged after it was written, write it again with "
               "`parallel-agents run PLAN --json`, or report the stored run by its id")


#: Unix seconds (or seconds of a run): never negative, and below ~31,700 years, so any
#: difference of two of them stays a finite float the timeline can be scaled by.
_Time = Annotated[float, Field(ge=0, le=1e12)]


class _Strict(BaseModel):
    # strict: "3.5" is not a number here (the report would do arithmetic on it), and a
    # number can never be infinite or NaN (a timeline to infinity cannot be drawn).
    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)


class _Attempt(_Strict):
    attempt: int = Field(ge=1)
    started_at: _Time
    finished_at: _Time | None = None
    outcome: str | None = None
    error: str | None = None
    waited_seconds: _Time | None = None


class _Task(_Strict):
    status: str
    pool: str | None = None
    attempts: int | None = Field(default=None, ge=0)
    started_at: _Time | None = None
    finished_at: _Time | None = None
    error: str | None = None
    cost_usd: float | None = Field(default=None, ge=0)
    history: list[_Attempt] | None = None


class _Run(_Strict):
    run_id: str = Field(min_length=1)
    status: str
    strategy: Strategy | None = None
    started_at: _Time
    finished_at: _Time | None = None
    makespan_seconds: _Time
    serial_seconds: float = Field(ge=0)
    critical_path_seconds: float = Field(ge=0)
    critical_path: list[str] = Field(default_factory=list)
    speedup: float
    efficiency: float
    max_parallel: int = Field(ge=0)
    max_workers: int | None = Field(default=None, ge=1)
    pool_utilization: dict[str, float] | None = None
    counts: dict[str, int] | None = None
    cost_usd: float | None = None
    budget_usd: float | None = None
    usage: dict[str, int | float] | None = None
    tasks: dict[str, _Task]
    plan: dict[str, Any]  # (what is in it: Plan.from_dict checks, see report._sim_plan)


_PLAIN = {
    "missing": "is missing",
    "float_type": "must be a number",
    "finite_number": "must be a finite number, not infinity or NaN",
    "int_type": "must be a whole number",
    "string_type": "must be text",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
}


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        bound = (err.get("ctx") or {})
        if err["type"] == "less_than_equal":
            msg = f"must be at most {bound['le']:g}"
        elif err["type"] == "greater_than_equal":
            msg = f"must be at least {bound['ge']:g}"
        elif err["type"] == "literal_error":
            msg = f"must be one of {bound['expected']}"
        else:
            msg = _PLAIN.get(err["type"]) or err["msg"][0].lower() + err["msg"][1:]
        if err["type"] != "missing":
            shown = repr(err.get("input"))
            msg += f" (got {shown if len(shown) <= 40 else shown[:37] + '...'})"
        problems.append(f"{_where(tuple(err['loc']))}: {msg}")
    return problems


def check_run_record(data: Any, ref: str) -> RunRecord:
    """(run_dict, plan_dict) from a parsed record, or a UsageError naming what is wrong."""
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict) \
            or "makespan_seconds" not in data:
        raise UsageError(f"{ref} is not a run record (no `tasks` / `makespan_seconds`): give the "
                         f"JSON file written by `parallel-agents run PLAN --json`, or a run id")
    # (first: a record without its plan, such as `RunResult.to_dict()`, needs another record,
    # whatever else is wrong with this one)
    if "plan" not in data or data["plan"] is None:
        raise UsageError(f"{ref} has no `plan`: {MISSING_PLAN_HINT}")
    try:
        _Run.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc)
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more"
                                          if len(problems) > 5 else "")
        raise UsageError(f"{ref} is not a valid run record: {shown}. {_HOW_TO_FIX}") from None
    plan = data["plan"]
    run = {k: v for k, v in data.items() if k != "plan"}
    return run, plan
