"""Result-cache keys: a hash of what a task does and what it is given.

The key is built from the task's own fields, generically, so a field added to `Task` later
(a prompt, a model, a temperature) is covered without touching this module. Fields that only
say *where* or *when* a task runs (its id, pool, priority, timeouts, retries, estimates,
stage) are left out: two tasks doing the same work with the same inputs share a result.

The executor adds what a task's output may depend on beyond that (`extra`):
- a command task reads its whole task on stdin (id, description, estimates...) and its id
  from the environment, so all of it is in its key; so for a Python function that takes the
  context (it sees `ctx.task`). Only a function that takes no context shares results across
  ids.
- an LLM task's key holds the messages it starts with, the model it really calls (a task
  that names none gets the run's default model) and its settings, and where that provider
  is (`agents.llm.call_identity`). Otherwise a task cached under one model, role or server
  would be answered from the cache after the default model, the role or the server changed.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any

__all__ = ["cache_key", "NOT_IN_KEY"]

#: Task fields that do not change what a task computes.
NOT_IN_KEY = frozenset({
    "id", "pool", "priority", "depends_on", "description", "timeout_sec", "max_retries",
    "retry_backoff_sec", "estimated_seconds", "stage", "cache", "run",
})
_KEY_VERSION = 1


def _callable_identity(fn: Any) -> dict[str, Any]:
    """A function task is identified by its qualified name and its code, not by its address."""
    identity: dict[str, Any] = {
        "module": getattr(fn, "__module__", None),
        "qualname": getattr(fn, "__qualname__", type(fn).__qualname__),
    }
    code = getattr(fn, "__code__", None)
    if code is not None:
        digest = hashlib.sha256(code.co_code)
        digest.update(repr(code.co_consts).encode())
        identity["code"] = digest.hexdigest()
    else:
        try:
            identity["source"] = hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()
        except (OSError, TypeError):
            pass
    return identity


def cache_key(task: Any, inputs: dict[str, Any], extra: Any = None) -> str:
    """sha256 over the task's definition (minus NOT_IN_KEY), its inputs and `extra` (JSON
    values: what the task's agent says its answer depends on), canonical JSON."""
    definition = {
        name: value
        for name, value in task.model_dump(mode="json", exclude={"run"}).items()
        if name not in NOT_IN_KEY
    }
    definition["kind"] = task.kind
    if extra is not None:
        definition["agent_call"] = extra
    if getattr(task, "run", None) is not None:
        definition["run"] = _callable_identity(task.run)
    blob = json.dumps({"v": _KEY_VERSION, "task": definition, "inputs": inputs},
                      sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()
