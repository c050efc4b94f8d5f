"""One JSON error shape for every failure: `{"error": {"type", "message", "problems"?}}`.

Clients (and people reading curl output) get what went wrong, where, and what to do; never a
traceback, and never a 500 for something the client sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._exceptions import PlanError, UsageError
from ._manager import ExecutionNotFound, PlanTooLarge, TooManyExecutions

__all__ = ["ApiError", "error_response", "install_error_handlers"]

log = logging.getLogger("parallel_agents.server")

_TYPES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 406: "not_acceptable", 409: "conflict",
          413: "too_large", 415: "unsupported_media_type", 422: "invalid_request",
          429: "too_many_requests"}


class ApiError(Exception):
    """Raise from an endpoint to answer `status` with a JSON error."""

    def __init__(self, status: int, type_: str, message: str,
                 problems: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.problems = problems
        self.headers = headers


def error_response(status: int, type_: str, message: str,
                   problems: list[dict[str, str]] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": type_, "message": message}
    if problems:
        body["problems"] = problems
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        head, rest = parts[0], parts[1:]
        return head + ("." + ".".join(rest) if rest else "")
    return ".".join(parts)


def install_error_handlers(app: FastAPI, redact: Callable[[Any], Any] | None = None) -> None:
    """Answer every failure in the one shape; `redact` masks secrets in messages and problems
    (an invalid plan's message may quote what the client sent: a task id, a name, a value)."""
    mask = redact or (lambda value: value)

    def respond(status: int, type_: str, message: str,
                problems: list[dict[str, str]] | None = None,
                headers: dict[str, str] | None = None) -> JSONResponse:
        return error_response(status, type_, mask(message), mask(problems), headers)

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return respond(exc.status, exc.type, exc.message, exc.problems, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            detail = next(e for e in errors if e.get("type") == "json_invalid")
            ctx = detail.get("ctx") or {}
            where = detail.get("loc", ("body", 0))
            pos = where[1] if len(where) > 1 else "?"
            return respond(
                400, "invalid_json",
                f"the request body is not valid JSON ({ctx.get('error', 'parse error')} at "
                f"character {pos}); send a JSON object with Content-Type: application/json")
        if any(tuple(e.get("loc", ())) == ("body",) and e.get("type") in
               ("model_attributes_type", "dict_type", "model_type") for e in errors):
            return respond(
                422, "invalid_request",
                "the request body must be a JSON object; send one with "
                "Content-Type: application/json (see GET /openapi.json for its fields)",
                [{"location": "body", "message": "not a JSON object"}])
        problems = []
        for e in errors:
            msg = str(e.get("msg", "invalid value"))
            msg = msg.removeprefix("Value error, ")
            problems.append({"location": _location(tuple(e.get("loc", ()))), "message": msg})
        summary = "; ".join(f"{p['location']}: {p['message']}" for p in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        return respond(422, "invalid_request",
                              f"the request is invalid: {summary}{more}", problems)

    @app.exception_handler(PlanError)
    async def _plan(_: Request, exc: PlanError) -> JSONResponse:
        problems = [{"location": ("plan." + p.location) if p.location else "plan",
                     "message": p.message} for p in exc.problems]
        n = len(problems)
        return respond(
            422, "invalid_plan",
            f"the plan is invalid: {n} problem{'s' if n != 1 else ''}; fix each one listed "
            f"in `problems`", problems)

    @app.exception_handler(UsageError)
    async def _usage(_: Request, exc: UsageError) -> JSONResponse:
        return respond(422, "invalid_request", str(exc))

    @app.exception_handler(PlanTooLarge)
    async def _too_many_tasks(_: Request, exc: PlanTooLarge) -> JSONResponse:
        return respond(422, "plan_too_large", str(exc))

    @app.exception_handler(ExecutionNotFound)
    async def _missing(_: Request, exc: ExecutionNotFound) -> JSONResponse:
        return respond(
            404, "not_found",
            f"no execution {exc.args[0]!r} (it never existed, belongs to another session, or "
            f"the server was restarted without a store); list yours with GET /api/executions")

    @app.exception_handler(TooManyExecutions)
    async def _full(_: Request, exc: TooManyExecutions) -> JSONResponse:
        return respond(429, "too_many_requests", str(exc), headers={"Retry-After": "5"})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        if status == 404:
            message = (f"no such endpoint: {request.method} {request.url.path}; "
                       f"see GET /openapi.json for the API")
        elif status == 405:
            message = (f"{request.method} is not allowed on {request.url.path}; "
                       f"see GET /openapi.json for the methods it accepts")
        elif status == 400 and exc.detail == "There was an error parsing the body":
            return respond(
                400, "invalid_json",
                "the request body could not be parsed (is the JSON nested too deeply?); send "
                "a JSON object with Content-Type: application/json")
        else:
            message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return respond(status, _TYPES.get(status, "error"), message,
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug of ours: log it with its traceback, tell the client without leaking details.
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return respond(500, "internal_error",
                              "the server hit an unexpected error; it is logged on the server. "
                              "Please report it with the time of the request")
