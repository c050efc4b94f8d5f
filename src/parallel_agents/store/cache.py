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

import functools
import hashlib
import inspect
import json
from typing import Any

__all__ = ["cache_key", "NOT_IN_KEY", "Uncacheable"]

#: Task fields that do not change what a task computes.
NOT_IN_KEY = frozenset({
    "id", "pool", "priority", "depends_on", "description", "timeout_sec", "max_retries",
    "retry_backoff_sec", "estimated_seconds", "stage", "cache", "run",
})
_KEY_VERSION = 2  # 2: function identities cover defaults, closures and partials


class Uncacheable(Exception):
    """A task whose work cannot be pinned down by a key: it is run, never served."""


def _strict(value: Any, what: str) -> Any:
    """`value` as canonical JSON text, or Uncacheable: a value without one (an object, a
    path) has no identity a later process could compare."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        raise Uncacheable(f"{what} holds a {type(value).__name__}, not JSON values") from None


def _code_digest(code: Any, digest: Any) -> None:
    """Bytecode and constants, nested code objects (inner functions, comprehensions) by
    their own content: their repr holds an address, different in every process."""
    digest.update(code.co_code)
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            _code_digest(const, digest)
        else:
            digest.update(repr(const).encode())
    digest.update(repr(code.co_names).encode())


def _callable_identity(fn: Any, _seen: frozenset[int] = frozenset()) -> dict[str, Any]:
    """A function task is identified by its qualified name, its code and what it closes
    over (defaults, closure cells, a partial's arguments), not by its address. What it reads
    from globals is not covered. Raises Uncacheable for what cannot be pinned down: a
    callable object or bound method (its state is the instance's), a closure or partial
    holding values that are not JSON."""
    if id(fn) in _seen:
        # A function its own closure reaches (a recursive inner function): named, not
        # walked again.
        return {"recursive": getattr(fn, "__qualname__", type(fn).__qualname__)}
    _seen = _seen | {id(fn)}
    if isinstance(fn, functools.partial):
        return {"partial": _callable_identity(fn.func, _seen),
                "args": _strict(list(fn.args), "the partial's arguments"),
                "keywords": _strict(fn.keywords, "the partial's keywords")}
    code = getattr(fn, "__code__", None)
    if code is None:
        if inspect.isbuiltin(fn):
            return {"builtin": f"{getattr(fn, '__module__', None)}.{fn.__qualname__}"}
        raise Uncacheable(f"a {type(fn).__name__} (not a plain function) has no stable identity")
    if getattr(fn, "__self__", None) is not None:
        raise Uncacheable("a bound method depends on its instance")
    digest = hashlib.sha256()
    _code_digest(code, digest)
    identity: dict[str, Any] = {
        "module": getattr(fn, "__module__", None),
        "qualname": getattr(fn, "__qualname__", None),
        "code": digest.hexdigest(),
    }
    if fn.__defaults__ or fn.__kwdefaults__:
        identity["defaults"] = _strict([list(fn.__defaults__ or ()), fn.__kwdefaults__ or {}],
                                       "its default arguments")
    cells = []
    for name, cell in zip(code.co_freevars, fn.__closure__ or ()):
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            value = None
        if callable(value) and not isinstance(value, type):
            cells.append([name, _callable_identity(value, _seen)])
        else:
            cells.append([name, _strict(value, f"its closure ({name})")])
    if cells:
        identity["closure"] = cells
    return identity


def cache_key(task: Any, inputs: dict[str, Any], extra: Any = None) -> str:
    """sha256 over the task's definition (minus NOT_IN_KEY), its inputs and `extra` (JSON
    values: what the task's agent says its answer depends on), canonical JSON. Raises
    Uncacheable for a function task whose callable has no stable identity."""
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
