"""The FastAPI application: the seeds' gateway endpoints, SSE, auth, limits and the dashboard."""

from __future__ import annotations

import hmac
import json
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette.sse import EventSourceResponse

from .. import __version__
from ..agents.command import CommandAgent
from ..backends import Backend
from ..plan import Plan
from ._errors import ApiError, error_response, install_error_handlers
from ._manager import ExecutionManager, PlanTooLarge, Principal, check_plan_size
from ._metrics import GatewayMetrics
from ._planning import CoordinatorPlanner, Planned, Planner, as_planned
from ._redact import Redactor
from ._runner import TOKEN_ENV, check_tokens
from ._store import ExecutionRecord, ExecutionStore

__all__ = ["Limits", "Planner", "create_app"]

_MAX_SEQ = 2**63 - 1


class Limits(BaseModel):
    """Request limits. The defaults fit plans of a thousand tasks with room to spare."""

    model_config = ConfigDict(frozen=True)

    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    max_tasks: int = Field(default=1000, ge=1)
    max_active: int = Field(default=1000, ge=1)


# -- request and response bodies ---------------------------------------------------------
_ID = Annotated[str, Field(min_length=1, max_length=200)]


class ExecuteRequest(BaseModel):
    """A request text (needs a coordinator) or a plan in the plan-file schema."""

    model_config = ConfigDict(extra="forbid")

    message: str | None = Field(default=None, min_length=1, max_length=100_000,
                                description="A request text for the coordinator to plan.")
    plan: dict[str, Any] | None = Field(
        default=None, description="A plan, as in a plan file (`tasks`, `pools`, ...).")
    sessionKey: str | None = Field(default=None, min_length=1, max_length=200)
    project: str | None = Field(default=None, min_length=1, max_length=200)
    force_parallel: bool = Field(
        default=False, strict=True, description="With `message`: keep the request's parts as "
        "separate tasks even if the coordinator would run it serially. Ignored with `plan` (a "
        "plan always runs as given). A JSON boolean.")
    budget_usd: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="Most USD the execution's LLM "
        "tasks may spend: a task that could exceed what is left is skipped (the run ends "
        "`partial`, with the reason). Every priced model must have a known price.")


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=100_000)
    sessionKey: str | None = Field(default=None, min_length=1, max_length=200)
    project: str | None = Field(default=None, min_length=1, max_length=200)


class ExecuteResponse(BaseModel):
    execution_id: str
    status: str
    tasks: list[dict[str, Any]]
    estimated_duration: float = Field(description="Predicted makespan in seconds, from the "
                                      "tasks' estimates (virtual-time simulation).")
    events_url: str
    status_url: str
    decision: dict[str, Any] | None = Field(
        default=None, description="With `message`: the coordinator's serial/parallel "
        "decision, its reason and the plan's source.")


class ExecutionView(BaseModel):
    execution_id: str
    status: str
    plan: str
    sessionKey: str | None
    project: str | None
    created_at: float
    finished_at: float | None
    estimated_duration: float
    tasks: list[dict[str, Any]]
    results: dict[str, Any]
    final_response: str | None = Field(description="The coordinator's answer (markdown) once "
                                       "a run planned from `message` has ended.")
    conflicts: list[dict[str, Any]]
    decision: dict[str, Any] | None
    cost: dict[str, Any]
    makespan_seconds: float | None
    speedup: float | None
    reason: str | None
    events: int


class ExecutionPage(BaseModel):
    items: list[dict[str, Any]]
    total: int
    offset: int
    limit: int


class CancelResponse(BaseModel):
    execution_id: str
    cancelled: bool
    status: str
    message: str


class ChatResponse(BaseModel):
    mode: str = Field(description="`parallel` (an execution was started; follow it) or "
                      "`serial` (answered in this response, by one task).")
    execution_id: str | None = None
    response: str | None = Field(default=None, description="`serial`: the answer.")
    status: str | None = Field(default=None, description="The execution's status "
                               "(`serial`: final).")
    reason: str | None = Field(default=None, description="Why the coordinator chose the mode.")
    message: str


_ERROR_SCHEMA: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": {"type": "object", "properties": {
            "type": {"type": "string"}, "message": {"type": "string"},
            "problems": {"type": "array"}}}}}}}}
    for code, text in ((400, "Bad JSON"), (401, "Missing or wrong token"),
                       (404, "Unknown execution"), (413, "Body too large"),
                       (422, "Invalid request or plan"))
}


# -- middleware (pure ASGI, so streaming responses are untouched) ------------------------
class _BodyLimit:
    """Refuses bodies over the limit with 413 before the app reads them into memory."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_big = error_response(
            413, "too_large",
            f"the request body is larger than {self.max_bytes} bytes; send a smaller plan "
            f"or start the server with a higher --max-body-bytes")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared > self.max_bytes:
                await too_big(scope, receive, send)
                return
        # Chunked bodies have no length: read up to the limit, then replay what was read.
        chunks: list[bytes] = []
        size = 0
        more = True
        if scope.get("method") in ("POST", "PUT", "PATCH"):
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body = message.get("body", b"")
                size += len(body)
                if size > self.max_bytes:
                    await too_big(scope, receive, send)
                    return
                chunks.append(body)
                more = message.get("more_body", False)
            replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

            async def replay_receive() -> Any:
                return replay.pop() if replay else await receive()

            await self.app(scope, replay_receive, send)
            return
        await self.app(scope, receive, send)


class _Latency:
    """Observes API latency (time to response headers) by route template."""

    def __init__(self, app: Any, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def timed_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                path = getattr(route, "path", None) or "unmatched"
                self.metrics.http_seconds.labels(
                    scope.get("method", "?"), path, str(message["status"])
                ).observe(time.perf_counter() - start)
            await send(message)

        await self.app(scope, receive, timed_send)


def _event_seq(value: str, where: str) -> int:
    """An event seq from a header or query: 400 for anything but 0..2**63-1 (SQLite's range:
    a larger number would fail inside the store, after the stream has started)."""
    text = value.strip()
    seq = int(text) if re.fullmatch(r"[0-9]{1,19}", text) else -1
    if not 0 <= seq <= _MAX_SEQ:
        raise ApiError(400, "bad_request",
                       f"{where} must be an event seq, an integer from 0 to {_MAX_SEQ}, got "
                       f"{value[:40]!r}; send the `id` of the last event you received")
    return seq


# -- the app ------------------------------------------------------------------------------
def _without_server_auth(executor_options: dict[str, Any] | None, secrets: list[str]
                         ) -> dict[str, Any]:
    """Executor options whose command tasks do not inherit the server's own auth.

    A session user may run any program: had it the server's environment, it could read the
    operator token (`$PARALLEL_AGENTS_TOKEN`, or any variable holding one of the tokens) and
    print it in a form masking does not catch. A command agent given by the caller is kept.
    """
    options = dict(executor_options or {})
    agents = dict(options.get("agents") or {})
    if "command" not in agents:
        drop = {TOKEN_ENV, *(name for name, value in os.environ.items()
                             if value and any(s in value for s in secrets))}
        agents["command"] = CommandAgent(drop_env=drop)
    options["agents"] = agents
    return options


def create_app(
    *,
    token: str | None = None,
    session_tokens: Mapping[str, str] | None = None,
    store: ExecutionStore | None = None,
    run_store: str | Path | None = None,
    manager: ExecutionManager | None = None,
    planner: Planner | None = None,
    coordinator: Any = None,
    limits: Limits | None = None,
    executor_options: dict[str, Any] | None = None,
) -> FastAPI:
    """Build the gateway.

    * **token** - the operator token: required as `Authorization: Bearer <token>` on every
      endpoint but `/healthz` (and the dashboard's static files, which hold no data); sees
      every execution.
    * **session_tokens** - session name -> token. A session sees only its own executions.
    * **store** - where executions are kept (in memory by default).
    * **run_store** - a durable store file (`parallel_agents.store`): every execution is a
      durable run, and executions and their events survive a restart of the server.
    * **planner** - the seam for request texts (`message`) and `/api/chat`.
    * **coordinator** - a `Coordinator`: shorthand for `planner=CoordinatorPlanner(it)`.
    """
    if planner is None and coordinator is not None:
        planner = CoordinatorPlanner(coordinator)
    limits = limits or Limits()
    sessions = dict(session_tokens or {})
    check_tokens(token, sessions)
    secrets = [t for t in (token, *sessions.values()) if t]
    auth_on = bool(secrets)
    redactor = Redactor.from_environment(secrets)
    closers: list[Any] = []
    if run_store is not None:
        if store is not None or manager is not None:
            raise ValueError("give run_store, or store/manager, not both")
        from ._durable import DurableExecutionStore, RedactingRunStore

        durable = RedactingRunStore(run_store, redactor=redactor.child(()))
        durable.add_secrets(secrets)
        store = DurableExecutionStore(durable)
        executor_options = {**(executor_options or {}), "store": durable}
        closers += [store.close, durable.close]
    executor_options = _without_server_auth(executor_options, secrets)
    manager = manager or ExecutionManager(
        store, redactor=redactor, max_active=limits.max_active,
        executor_options=executor_options)
    metrics = GatewayMetrics(manager)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await manager.shutdown()
        # A backend shared by every execution (`serve --backend ray`) is released once, here.
        backend = (executor_options or {}).get("backend")
        if isinstance(backend, Backend):
            await backend.close()
        for close in closers:
            close()

    app = FastAPI(
        title="parallel-agents gateway",
        version=__version__,
        description="Run plans of AI-agent tasks in parallel and follow them live. "
                    "Send `Authorization: Bearer <token>` when the server has a token.",
        lifespan=lifespan,
        responses=_ERROR_SCHEMA,
        # No /docs or /redoc: those pages load Swagger UI / ReDoc from a CDN, and the product
        # calls no server the user did not configure. The schema is served below, with auth.
        docs_url=None, redoc_url=None, openapi_url=None,
    )
    app.state.manager = manager
    app.state.metrics = metrics
    install_error_handlers(app, redactor)

    def principal(authorization: Annotated[str | None, Header(
            description="`Bearer <token>` (required when the server has a token)")] = None
                  ) -> Principal:
        if not auth_on:
            return Principal()
        challenge = {"WWW-Authenticate": "Bearer"}
        if not authorization:
            raise ApiError(401, "unauthorized",
                           "this server needs a token: send `Authorization: Bearer <token>`",
                           headers=challenge)
        scheme, _, given = authorization.partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            raise ApiError(401, "unauthorized",
                           "malformed Authorization header: use `Authorization: Bearer <token>`",
                           headers=challenge)
        # Compare against every token without stopping early: no timing hints.
        operator = bool(token) and hmac.compare_digest(given.encode(), token.encode())  # type: ignore[union-attr]
        session = None
        for name, secret in sessions.items():
            if hmac.compare_digest(given.encode(), secret.encode()):
                session = name
        if operator:
            return Principal()
        if session is not None:
            return Principal(session=session, operator=False)
        raise ApiError(401, "unauthorized", "wrong token", headers=challenge)

    who_dep = Depends(principal)

    def view(record: ExecutionRecord) -> dict[str, Any]:
        states = manager.task_states(record)
        result = record.result or {}
        tasks = [{**t, **states.get(t["id"], {})} for t in record.tasks]
        return {
            "execution_id": record.execution_id,
            "status": record.status,
            "plan": record.plan_name,
            "sessionKey": record.session_key,
            "project": record.project,
            "created_at": record.created_at,
            "finished_at": record.finished_at,
            "estimated_duration": record.estimated_duration,
            "tasks": tasks,
            "results": result.get("tasks") or {},
            "final_response": result.get("final_response"),
            "conflicts": result.get("conflicts") or [],
            "decision": result.get("decision"),
            "cost": {"usd": result.get("cost_usd", 0.0), "tokens": result.get("tokens") or {}},
            "makespan_seconds": result.get("makespan_seconds"),
            "speedup": result.get("speedup"),
            "reason": result.get("reason"),
            "events": len(record.events),
        }

    def summary(record: ExecutionRecord) -> dict[str, Any]:
        result = record.result or {}
        counts = result.get("counts")
        if counts is None:
            counts = {}
            for state in manager.task_states(record).values():
                counts[state["status"]] = counts.get(state["status"], 0) + 1
        return {"execution_id": record.execution_id, "status": record.status,
                "plan": record.plan_name, "sessionKey": record.session_key,
                "project": record.project, "created_at": record.created_at,
                "finished_at": record.finished_at, "tasks": len(record.tasks),
                "counts": counts, "makespan_seconds": result.get("makespan_seconds"),
                "speedup": result.get("speedup"), "cost_usd": result.get("cost_usd", 0.0)}

    def session_of(who: Principal, session_key: str | None) -> str | None:
        if not who.operator and session_key is not None and session_key != who.session:
            raise ApiError(403, "forbidden",
                           f"sessionKey {session_key!r} is not your session ({who.session!r}); "
                           f"omit sessionKey or use your own")
        return session_key if session_key is not None else who.session

    # -- endpoints ---------------------------------------------------------------------
    @app.post("/api/execute-parallel", status_code=202, response_model=ExecuteResponse,
              tags=["executions"])
    async def execute_parallel(body: ExecuteRequest, who: Principal = who_dep) -> dict[str, Any]:
        """Start an execution of `plan` (or of the coordinator's plan for `message`)."""
        if body.plan is None and body.message is None:
            raise ApiError(422, "invalid_request",
                           "nothing to run: send `plan` (a plan in the plan-file schema, with "
                           "`tasks`) or `message` (a request text)")
        if body.plan is not None and body.message is not None:
            raise ApiError(422, "invalid_request",
                           "send either `plan` or `message`, not both")
        session_key = session_of(who, body.sessionKey)
        planned: Planned | None = None
        if body.plan is not None:
            check_plan_size(body.plan, limits.max_tasks)
            plan = Plan.from_dict(body.plan, source="plan")
        else:
            planned = await _plan_from_message(body.message or "", session_key, body.project,
                                               body.force_parallel)
            plan = planned.plan
        if len(plan.tasks) > limits.max_tasks:
            raise PlanTooLarge(len(plan.tasks), limits.max_tasks)
        if not plan.tasks:
            raise ApiError(422, "invalid_plan", "the plan has no tasks: add at least one "
                           "under `tasks`",
                           [{"location": "plan.tasks", "message": "empty"}])
        record = manager.start(plan, principal=who, session_key=session_key,
                               project=body.project, budget_usd=body.budget_usd,
                               run=planned.run if planned is not None else None)
        return {"execution_id": record.execution_id, "status": record.status,
                "tasks": record.tasks, "estimated_duration": record.estimated_duration,
                "events_url": f"/api/execution/{record.execution_id}/events",
                "status_url": f"/api/execution/{record.execution_id}",
                "decision": planned.details or {"mode": planned.decision,
                                                "reason": planned.reason}
                if planned is not None else None}

    async def _plan_from_message(message: str, session_key: str | None, project: str | None,
                                 force_parallel: bool) -> Planned:
        if planner is None:
            raise ApiError(422, "coordinator_unavailable",
                           "this server has no coordinator to turn a request text into a "
                           "plan; send a `plan` (the plan-file schema: {\"tasks\": [{\"id\": "
                           "..., \"command\": [...]}]}) instead of `message`")
        planned = as_planned(await planner(message, session_key=session_key, project=project,
                                           force_parallel=force_parallel))
        if planned is None:
            raise ApiError(422, "not_parallel",
                           "the planner found nothing to run in parallel for this request; "
                           "use POST /api/chat to have it answered serially")
        return planned

    @app.get("/api/execution/{execution_id}", response_model=ExecutionView,
             tags=["executions"])
    async def get_execution(execution_id: _ID, who: Principal = who_dep) -> dict[str, Any]:
        """Status, tasks, results, cost, makespan and speedup of one execution."""
        return view(manager.get(execution_id, who))

    @app.get("/api/execution/{execution_id}/events", tags=["executions"],
             response_class=EventSourceResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "Server-Sent Events; `id` is the event's seq."}})
    async def execution_events(
        execution_id: _ID, who: Principal = who_dep,
        last_event_id: Annotated[str | None, Header(
            description="Resume after this event seq (sent by EventSource on reconnect)."
        )] = None,
        after: Annotated[str | None, Query(
            description="Resume after this seq (for clients that cannot set headers): an "
            "integer from 0 to 2**63-1."
        )] = None,
    ) -> EventSourceResponse:
        """Every event of the execution (past ones first, then live) until it ends."""
        manager.get(execution_id, who)
        start = _event_seq(after, "?after=") if after is not None else 0
        if last_event_id is not None and last_event_id.strip():
            start = _event_seq(last_event_id, "Last-Event-ID")

        async def stream() -> AsyncIterator[dict[str, Any]]:
            async for event in manager.events(execution_id, start):
                yield {"id": str(event["seq"]), "data": json.dumps(event)}

        return EventSourceResponse(stream(), ping=15, sep="\n",
                                   headers={"Cache-Control": "no-store"})

    @app.post("/api/execution/{execution_id}/cancel", response_model=CancelResponse,
              tags=["executions"])
    async def cancel_execution(execution_id: _ID, who: Principal = who_dep) -> dict[str, Any]:
        """Stop a running execution: running tasks are cancelled, queued ones never start."""
        cancelled = manager.cancel(execution_id, who)
        record = manager.get(execution_id, who)
        return {"execution_id": execution_id, "cancelled": cancelled, "status": record.status,
                "message": "cancelling: follow the events for the final status" if cancelled
                else f"the execution had already ended ({record.status}); nothing to cancel"}

    @app.get("/api/executions", response_model=ExecutionPage, tags=["executions"])
    async def list_executions(
        who: Principal = who_dep,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        sessionKey: Annotated[str | None, Query(max_length=200)] = None,
    ) -> dict[str, Any]:
        """Executions you may see, newest first."""
        # Stored sessionKeys are masked like everything else: so is the filter.
        rows, total = manager.list(who, session_key=redactor(sessionKey), offset=offset,
                                   limit=limit)
        return {"items": [summary(r) for r in rows], "total": total, "offset": offset,
                "limit": limit}

    @app.post("/api/chat", response_model=ChatResponse, tags=["chat"])
    async def chat(body: ChatRequest, who: Principal = who_dep) -> dict[str, Any]:
        """Route a message to a parallel execution when the coordinator judges it beneficial."""
        session_key = session_of(who, body.sessionKey)
        if planner is None:
            return {"mode": "serial", "execution_id": None, "response": None,
                    "message": "no coordinator is configured on this server, so the message "
                               "was not routed to a parallel execution; to run work in "
                               "parallel, POST a plan to /api/execute-parallel"}
        planned = as_planned(await planner(body.message, session_key=session_key,
                                           project=body.project, force_parallel=False))
        if planned is None or not planned.plan.tasks:
            return {"mode": "serial", "execution_id": None, "response": None,
                    "message": "the planner judged this request not worth running in "
                               "parallel, and has no serial answer for it"}
        record = manager.start(planned.plan, principal=who, session_key=session_key,
                               project=body.project, run=planned.run)
        if planned.parallel:
            return {"mode": "parallel", "execution_id": record.execution_id,
                    "response": None, "status": record.status, "reason": planned.reason,
                    "message": f"started execution {record.execution_id} with "
                               f"{len(record.tasks)} tasks; follow "
                               f"/api/execution/{record.execution_id}/events"}
        # Serial (the seeds' original /api/chat): one task, answered in this response. It
        # still runs as an execution, so it can be followed, listed and cancelled meanwhile.
        record = await manager.wait(record.execution_id, who)
        result = record.result or {}
        return {"mode": "serial", "execution_id": record.execution_id,
                "response": result.get("final_response"), "status": record.status,
                "reason": planned.reason,
                "message": f"answered serially ({planned.reason}); execution "
                           f"{record.execution_id} {record.status}"}

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_schema(who: Principal = who_dep) -> dict[str, Any]:
        """The OpenAPI schema, behind the same token as the API it describes."""
        return app.openapi()

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, Any]:
        """Liveness: no token needed, no data revealed."""
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", tags=["operations"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}}})
    async def prometheus_metrics(who: Principal = who_dep) -> Response:
        """Prometheus text format (operator token only: the figures span every session)."""
        if not who.operator:
            raise ApiError(403, "forbidden", "/metrics covers every session's executions: "
                           "it needs the operator token (--token), not a session token")
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    static = resources.files("parallel_agents.server") / "static"

    @app.get("/", include_in_schema=False)
    async def dashboard() -> Response:
        return FileResponse(str(static / "index.html"), media_type="text/html",
                            headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    app.add_middleware(_Latency, metrics=metrics)  # type: ignore[arg-type]
    app.add_middleware(_BodyLimit, max_bytes=limits.max_body_bytes)  # type: ignore[arg-type]
    return app
