"""The HTTP gateway: run plans over HTTP, follow them live (SSE), and a dashboard.

    from parallel_agents.server import create_app, ServerThread
    with ServerThread(create_app(token="a-long-random-token")) as server:
        print(server.url)
"""

from ._app import Limits, create_app
from ._manager import ExecutionManager, ExecutionNotFound, Principal, TooManyExecutions
from ._planning import CoordinatorPlanner, Planned, Planner
from ._redact import Redactor
from ._runner import ServerThread, check_bind, check_tokens, is_loopback, serve
from ._store import ExecutionRecord, ExecutionStore, MemoryExecutionStore

__all__ = [
    "CoordinatorPlanner",
    "ExecutionManager",
    "ExecutionNotFound",
    "ExecutionRecord",
    "ExecutionStore",
    "Limits",
    "MemoryExecutionStore",
    "Planned",
    "Planner",
    "Principal",
    "Redactor",
    "ServerThread",
    "TooManyExecutions",
    "check_bind",
    "check_tokens",
    "create_app",
    "is_loopback",
    "serve",
]
