"""Running the gateway: the loopback rule, a foreground server and a background one."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Any

import uvicorn

from .._exceptions import UsageError

__all__ = ["MIN_TOKEN_LEN", "TOKEN_ENV", "ServerThread", "check_bind", "check_tokens",
           "is_loopback", "serve"]

#: Where `parallel-agents serve` reads the operator token from (its --token default).
TOKEN_ENV = "PARALLEL_AGENTS_TOKEN"

#: Shorter tokens are refused: easy to guess, and too short for the redactor to mask safely.
MIN_TOKEN_LEN = 8
_NEW_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(24))'"

# Always asyncio's own loop, even where uvloop is installed: under uvloop, writing a command
# task's stdin fails with "unable to perform operation on <WriteUnixTransport closed=True>"
# when many subprocesses run at once (MagicStack/uvloop#506, open), which failed about half of
# the executions in benchmarks/http_load.py. The executor is tested on asyncio's loop.
LOOP = "asyncio"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def check_bind(host: str, token: str | None, session_tokens: dict[str, str] | None = None
               ) -> None:
    """Refuse to expose an unauthenticated server beyond this machine."""
    if not is_loopback(host) and not token and not session_tokens:
        raise UsageError(
            f"refusing to listen on {host} without a token: anyone who can reach it could "
            f"run commands on this machine. Pass --token TOKEN (or set {TOKEN_ENV}), "
            f"or listen on 127.0.0.1")


def check_tokens(token: str | None, session_tokens: dict[str, str] | None = None) -> None:
    """Refuse tokens too short to be safe or masked, and tokens shared by two principals.

    A token decides whose executions a request sees, so two sessions (or a session and the
    operator) with the same token would be one principal under two names.
    """
    sessions = session_tokens or {}
    short = (f"is too easy to guess, and too short to mask in outputs; use a long random one "
             f"({_NEW_TOKEN})")
    if token and len(token) < MIN_TOKEN_LEN:
        raise UsageError(f"--token must be at least {MIN_TOKEN_LEN} characters, got "
                         f"{len(token)} (from --token or ${TOKEN_ENV}): it {short}")
    owners: dict[str, str] = {token: "the operator token (--token)"} if token else {}
    for name, secret in sessions.items():
        if len(secret) < MIN_TOKEN_LEN:
            raise UsageError(f"--session {name}: its token must be at least {MIN_TOKEN_LEN} "
                             f"characters, got {len(secret)}: it {short}")
        if secret in owners:
            raise UsageError(f"--session {name} has the same token as {owners[secret]}: give "
                             f"each session a token of its own")
        owners[secret] = f"--session {name}"


def serve(app: Any, host: str = "127.0.0.1", port: int = 8000, *,
          log_level: str = "info") -> None:
    """Run `app` in the foreground until Ctrl-C (uvicorn handles the signals)."""
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=15, loop=LOOP)


class ServerThread:
    """Serves `app` on loopback in a background thread; `url` is known once started.

    The socket is bound before uvicorn starts (port 0 = any free port), so there is no race
    between choosing a port and listening on it. Used by the tests and the benchmark.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(2048)
        self.host, self.port = self.sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        config = uvicorn.Config(app, log_level=log_level, access_log=False, loop=LOOP,
                                timeout_graceful_shutdown=5, backlog=2048)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name=f"uvicorn {self.url}", daemon=True)

    def start(self, timeout: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server at {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
