"""A real OpenAI- and Anthropic-compatible HTTP server on loopback, scriptable per test.

It runs uvicorn + starlette in a background thread on a free port, so the official SDKs talk to
it over real HTTP (no client patching). Endpoints: `POST /v1/chat/completions` (OpenAI shape)
and `POST /v1/messages` (Anthropic shape).

Usage::

    from tests.fakes.openai_server import FakeLLMServer, Reply

    with FakeLLMServer() as srv:
        srv.openai_base_url      # "http://127.0.0.1:PORT/v1"   -> AsyncOpenAI(base_url=...)
        srv.anthropic_base_url   # "http://127.0.0.1:PORT"      -> AsyncAnthropic(base_url=...)

        srv.enqueue(Reply.rate_limited(retry_after=0.2), Reply.text("hi"))  # next answers, FIFO
        srv.default = Reply.text("ok")        # when the queue is empty (default: echo-ish text)
        srv.handler = fn                      # or fn(body: dict) -> Reply, for full control
        srv.latency = 0.05                    # seconds added to every answer
        srv.limit_requests(20, period=1.0)    # enforce "20 requests per 1 s" itself: 429 beyond
        ...
        srv.requests                          # list[Recorded]: t (monotonic), path, body,
                                              # status, auth (the Authorization/x-api-key value)
        srv.max_in_window(1.0)                # most arrivals seen in any 1 s window
        srv.count(status=429)

Replies (`Reply.*`): `text(s)`, `json(obj)` (content is `json.dumps(obj)`), `tool_call(name,
args)`, `error(status, message, code=None, headers=None)`, `rate_limited(retry_after=None,
retry_after_ms=None)`, `overloaded()` (529), `server_error()` (500), `hang(seconds)` (answer
after `seconds`; use with a short client timeout), `malformed()` (HTTP 200 with a body that is
not JSON), `bad_json_content()` (valid envelope, content not JSON). Every reply takes
`latency=` too. Token usage in answers is a word count, so tests can check it.

Rate-limit headers: every answer carries `x-ratelimit-{limit,remaining,reset}-requests`
(OpenAI) or `anthropic-ratelimit-requests-{limit,remaining,reset}` (Anthropic) when a request
limit is set.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["FakeLLMServer", "Recorded", "Reply"]


@dataclass
class Reply:
    kind: str
    content: str = ""
    data: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    latency: float = 0.0

    @classmethod
    def text(cls, text: str, latency: float = 0.0) -> Reply:
        return cls("text", content=text, latency=latency)

    @classmethod
    def json(cls, obj: Any, latency: float = 0.0) -> Reply:
        return cls("text", content=json.dumps(obj), latency=latency)

    @classmethod
    def tool_call(cls, name: str, args: dict[str, Any], latency: float = 0.0) -> Reply:
        return cls("tool", data={"name": name, "arguments": args}, latency=latency)

    @classmethod
    def error(cls, status: int, message: str = "error", code: str | None = None,
              headers: dict[str, str] | None = None, latency: float = 0.0) -> Reply:
        return cls("error", content=message, data=code, status=status, headers=headers or {},
                   latency=latency)

    @classmethod
    def rate_limited(cls, retry_after: float | None = None, retry_after_ms: float | None = None,
                     latency: float = 0.0) -> Reply:
        headers = {}
        if retry_after is not None:
            headers["retry-after"] = f"{retry_after:g}"
        if retry_after_ms is not None:
            headers["retry-after-ms"] = f"{retry_after_ms:g}"
        return cls.error(429, "Rate limit reached", "rate_limit_exceeded", headers, latency)

    @classmethod
    def overloaded(cls, latency: float = 0.0) -> Reply:
        return cls.error(529, "Overloaded", "overloaded_error", latency=latency)

    @classmethod
    def server_error(cls, latency: float = 0.0) -> Reply:
        return cls.error(500, "The server had an error", "server_error", latency=latency)

    @classmethod
    def hang(cls, seconds: float) -> Reply:
        return cls("text", content="too late", latency=seconds)

    @classmethod
    def malformed(cls, latency: float = 0.0) -> Reply:
        return cls("malformed", latency=latency)

    @classmethod
    def bad_json_content(cls, latency: float = 0.0) -> Reply:
        return cls("text", content="{not json", latency=latency)


@dataclass
class Recorded:
    t: float
    path: str
    body: dict[str, Any]
    status: int = 0
    auth: str = ""


def user_prompt(body: dict[str, Any]) -> str:
    """The user messages of a recorded OpenAI-shaped request body, joined."""
    return " ".join(m.get("content") or "" for m in body.get("messages", [])
                    if m.get("role") == "user" and isinstance(m.get("content"), str))


def _words(body: dict[str, Any]) -> int:
    total = 0
    for m in body.get("messages", []):
        content = m.get("content")
        if isinstance(content, str):
            total += len(content.split())
        elif isinstance(content, list):
            total += sum(len(str(b.get("text") or b.get("content") or "").split())
                         for b in content if isinstance(b, dict))
    if isinstance(body.get("system"), str):
        total += len(body["system"].split())
    return total


class FakeLLMServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.queue: deque[Reply] = deque()
        self.default: Reply | None = None
        self.handler: Callable[[dict[str, Any]], Reply] | None = None
        self.latency = 0.0
        self.requests: list[Recorded] = []
        self._limit: tuple[int, float] | None = None
        self._arrivals: deque[float] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: uvicorn.Server | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ---- scripting ---------------------------------------------------------------------------

    def enqueue(self, *replies: Reply) -> None:
        with self._lock:
            self.queue.extend(replies)

    def limit_requests(self, limit: int, period: float = 60.0) -> None:
        """Enforce at most `limit` accepted requests in any `period` s; 429 + headers beyond."""
        self._limit = (limit, period)

    def reset(self) -> None:
        with self._lock:
            self.queue.clear()
            self.requests.clear()
            self._arrivals.clear()
        self.default = None
        self.handler = None
        self.latency = 0.0
        self._limit = None

    # ---- inspection --------------------------------------------------------------------------

    def count(self, status: int | None = None, path: str | None = None) -> int:
        return sum(1 for r in list(self.requests)
                   if (status is None or r.status == status) and (path is None or r.path == path))

    def max_in_window(self, period: float, status: int | None = None) -> int:
        """The most requests (optionally of one status) that arrived within any `period` s."""
        times = sorted(r.t for r in list(self.requests) if status is None or r.status == status)
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while times[lo] <= t - period:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    @property
    def openai_base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def config_toml(self, model: str, api_key_env: str = "FAKE_LLM_KEY") -> str:
        """A parallel-agents.toml whose LLM tasks (naming no model) ask this server for
        `model`, with the key from `api_key_env`."""
        return (f'[defaults]\nmodel = "openai:{model}"\n\n[providers.openai]\n'
                f'base_url = "{self.openai_base_url}"\napi_key_env = "{api_key_env}"\n')

    # ---- the app -----------------------------------------------------------------------------

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            if self.queue:
                return self.queue.popleft()
        if self.handler is not None:
            return self.handler(body)
        if self.default is not None:
            return self.default
        last = ""
        for m in body.get("messages", []):
            if m.get("role") == "user" and isinstance(m.get("content"), str):
                last = m["content"]
        return Reply.text(f"ok: {last[:60]}")

    def _admit(self, now: float) -> tuple[bool, dict[str, str], float]:
        """Apply the server-side request limit. (accepted, headers, retry_after)."""
        if self._limit is None:
            return True, {}, 0.0
        limit, period = self._limit
        with self._lock:
            while self._arrivals and self._arrivals[0] <= now - period:
                self._arrivals.popleft()
            accepted = len(self._arrivals) < limit
            if accepted:
                self._arrivals.append(now)
            reset = (self._arrivals[0] + period - now) if self._arrivals else 0.0
            remaining = max(0, limit - len(self._arrivals))
        return accepted, {"limit": str(limit), "remaining": str(remaining),
                          "reset": f"{max(reset, 0.001):.3f}s"}, max(reset, 0.001)

    async def _endpoint(self, request: Request) -> Response:
        now = time.monotonic()
        anthropic = request.url.path.endswith("/messages")
        try:
            body = await request.json()
        except ValueError:
            body = {}
        auth = request.headers.get("authorization", "") or request.headers.get("x-api-key", "")
        record = Recorded(now, request.url.path, body, auth=auth)
        with self._lock:
            self.requests.append(record)
        accepted, limit_info, wait = self._admit(now)
        headers: dict[str, str] = {}
        if limit_info:
            if anthropic:
                reset_at = datetime.now(UTC) + timedelta(
                    seconds=float(limit_info["reset"][:-1]))
                headers = {"anthropic-ratelimit-requests-limit": limit_info["limit"],
                           "anthropic-ratelimit-requests-remaining": limit_info["remaining"],
                           "anthropic-ratelimit-requests-reset": reset_at.isoformat()}
            else:
                headers = {f"x-ratelimit-{k}-requests": v for k, v in limit_info.items()}
        if not accepted:
            reply = Reply.rate_limited(retry_after=round(wait + 0.0005, 3))
        else:
            reply = self._next_reply(body)
        delay = self.latency + reply.latency
        until = time.monotonic() + delay
        while delay > 0 and not self._stopping:  # short naps: a hang ends when the server stops
            await asyncio.sleep(min(0.05, max(0.0, until - time.monotonic())))
            if time.monotonic() >= until:
                break
        headers.update(reply.headers)
        record.status = reply.status
        if reply.kind == "error":
            if anthropic:
                err_type = {429: "rate_limit_error", 529: "overloaded_error",
                            500: "api_error"}.get(reply.status, reply.data or "invalid_request_error")
                payload: dict[str, Any] = {"type": "error", "error": {
                    "type": err_type, "message": reply.content}}
                if reply.data and reply.data != err_type:
                    payload["error"]["error_code"] = reply.data
            else:
                payload = {"error": {"message": reply.content, "type": reply.data or "error",
                                     "code": reply.data}}
            return JSONResponse(payload, status_code=reply.status, headers=headers)
        if reply.kind == "malformed":
            return Response("<html>this is not json", status_code=200, headers=headers,
                            media_type="application/json")
        inp, n = _words(body), next(self._ids)
        model = body.get("model", "fake-model")
        if anthropic:
            content: list[dict[str, Any]] = []
            if reply.kind == "tool":
                content.append({"type": "tool_use", "id": f"toolu_{n}",
                                "name": reply.data["name"], "input": reply.data["arguments"]})
            else:
                forced = (body.get("tool_choice") or {}).get("name")
                if forced:
                    try:
                        data = json.loads(reply.content)
                    except ValueError:
                        data = {"text": reply.content}
                    content.append({"type": "tool_use", "id": f"toolu_{n}", "name": forced,
                                    "input": data})
                else:
                    content.append({"type": "text", "text": reply.content})
            out = sum(len(str(c.get("text") or c.get("input")).split()) for c in content)
            return JSONResponse({
                "id": f"msg_{n}", "type": "message", "role": "assistant", "model": model,
                "content": content,
                "stop_reason": "tool_use" if content[0]["type"] == "tool_use" else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": inp, "output_tokens": max(1, out)},
            }, headers=headers)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        finish = "stop"
        if reply.kind == "tool":
            message = {"role": "assistant", "content": None, "tool_calls": [{
                "id": f"call_{n}", "type": "function",
                "function": {"name": reply.data["name"],
                             "arguments": json.dumps(reply.data["arguments"])}}]}
            finish = "tool_calls"
        out = len((reply.content or json.dumps(reply.data)).split())
        return JSONResponse({
            "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": inp, "completion_tokens": max(1, out),
                      "total_tokens": inp + max(1, out)},
        }, headers=headers)

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeLLMServer:
        app = Starlette(routes=[
            Route("/v1/chat/completions", self._endpoint, methods=["POST"]),
            Route("/v1/messages", self._endpoint, methods=["POST"]),
        ])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=1, backlog=2048)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="fake-llm-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake LLM server did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
