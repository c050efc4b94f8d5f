"""Tools an LLM agent may call: user Python functions and the workspace file tools.

A tool's JSON schema comes from its type hints through a pydantic model built from the
signature, and the same model validates the arguments the model sends, so a schema and its
checks can never disagree. The workspace tools are confined to one directory: every path is
resolved (following `..` and symlinks) and refused if it lands outside.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, ValidationError, create_model

from ..providers.base import ToolSpec

__all__ = ["tool", "Tool", "as_tool", "Workspace", "WorkspaceError", "workspace_tools"]

MAX_READ_CHARS = 20_000
MAX_WRITE_CHARS = 2_000_000
MAX_LIST_ENTRIES = 500


@dataclass(slots=True)
class Tool:
    """A callable the model may invoke, with the schema it is shown and an argument checker."""

    name: str
    description: str
    fn: Callable[..., Any]
    parameters: dict[str, Any]
    _model: Any = field(repr=False, default=None)

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)

    async def call(self, arguments: dict[str, Any]) -> str:
        """Run the tool; any failure becomes an `error: ...` result the model can act on."""
        try:
            args = self._model.model_validate(arguments or {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors()
            )
            return f"error: bad arguments for {self.name}: {problems}"
        kwargs = {name: getattr(args, name) for name in type(args).model_fields}
        try:
            if inspect.iscoroutinefunction(self.fn):
                result = await self.fn(**kwargs)
            else:
                result = await asyncio.to_thread(self.fn, **kwargs)
        except WorkspaceError as exc:
            return f"error: {exc}"
        except Exception as exc:  # noqa: BLE001 - the model gets the error, the run goes on
            return f"error: {self.name} raised {type(exc).__name__}: {exc}"
        return result if isinstance(result, str) else _to_text(result)


def _to_text(value: Any) -> str:
    import json

    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


def as_tool(fn: Callable[..., Any], *, name: str | None = None,
            description: str | None = None) -> Tool:
    """Build a Tool from a function's signature, type hints and docstring."""
    existing = getattr(fn, "__pa_tool__", None)
    if isinstance(existing, Tool) and name is None and description is None:
        return existing
    if not callable(fn):
        raise TypeError(f"a tool must be callable, got {type(fn).__name__}")
    tool_name = name or getattr(fn, "__name__", None) or type(fn).__name__
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to Any
        hints = {}
    fields: dict[str, Any] = {}
    for pname, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = ... if param.default is param.empty else param.default
        fields[pname] = (hints.get(pname, Any), default)
    model = create_model(f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"),
                         **fields)
    schema = model.model_json_schema()
    schema.pop("title", None)
    doc = inspect.getdoc(fn) or ""
    return Tool(tool_name, description or doc.strip().split("\n\n")[0] or tool_name, fn,
                schema, model)


def tool(fn: Callable[..., Any] | None = None, *, name: str | None = None,
         description: str | None = None) -> Any:
    """Decorator: mark a function as an LLM tool (`@pa.tool` or `@pa.tool(name=...)`).

    The function stays callable as before; `Task(tools=[fn])` hands it to the model.
    """

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        f.__pa_tool__ = as_tool(f, name=name, description=description)  # type: ignore[attr-defined]
        return f

    return wrap(fn) if fn is not None else wrap


class WorkspaceError(Exception):
    """A workspace tool refused a path or failed; the message is shown to the model."""


class Workspace:
    """A directory the model may read and write, and nothing outside it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.written: list[str] = []
        #: relative path -> the content of this workspace's last write there, kept at write
        #: time (another task sharing the folder may overwrite the file before this one ends)
        self.versions: dict[str, str] = {}

    def resolve(self, path: str) -> Path:
        if not isinstance(path, str) or not path.strip():
            raise WorkspaceError("give a path relative to the workspace, e.g. src/app.py")
        if "\x00" in path:
            raise WorkspaceError("path contains a NUL byte")
        candidate = (self.root / path.strip()).resolve()
        if candidate != self.root and not candidate.is_relative_to(self.root):
            raise WorkspaceError(
                f"path {path!r} is outside the workspace; use a path relative to it "
                "(no '..', no absolute paths, no symlinks leading out)"
            )
        return candidate

    def read_file(self, path: str) -> str:
        """Read a text file from the workspace."""
        target = self.resolve(path)
        if not target.is_file():
            raise WorkspaceError(f"no such file in the workspace: {path}")
        text = target.read_text(encoding="utf-8", errors="replace")
        if len(text) > MAX_READ_CHARS:
            return text[:MAX_READ_CHARS] + f"\n[... {len(text) - MAX_READ_CHARS} more characters]"
        return text

    def write_file(self, path: str, content: str) -> str:
        """Create or overwrite a text file in the workspace (parent folders are created)."""
        if len(content) > MAX_WRITE_CHARS:
            raise WorkspaceError(f"content too large ({len(content)} characters)")
        target = self.resolve(path)
        if target == self.root or target.is_dir():
            raise WorkspaceError(f"{path!r} is a directory; give a file path")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Re-check after mkdir: a symlinked parent created meanwhile must not lead out.
        target = self.resolve(path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(content, encoding="utf-8")
        os.replace(tmp, target)
        if str(target) not in self.written:
            self.written.append(str(target))
        self.versions[target.relative_to(self.root).as_posix()] = content
        return f"wrote {len(content)} characters to {target.relative_to(self.root)}"

    def list_files(self, path: str = ".") -> str:
        """List the files under a workspace folder (recursively, relative paths)."""
        base = self.resolve(path)
        if not base.is_dir():
            raise WorkspaceError(f"no such folder in the workspace: {path}")
        entries: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for fname in sorted(filenames):
                full = Path(dirpath) / fname
                entries.append(str(full.relative_to(self.root)))
                if len(entries) >= MAX_LIST_ENTRIES:
                    return "\n".join(entries) + "\n[... more files not listed]"
        return "\n".join(entries) if entries else "(empty)"


def workspace_tools(ws: Workspace) -> list[Tool]:
    return [as_tool(ws.read_file, name="read_file"),
            as_tool(ws.write_file, name="write_file"),
            as_tool(ws.list_files, name="list_files")]
