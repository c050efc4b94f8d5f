"""Streaming planning: the model's tasks, each as soon as its JSON object is complete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ..providers.base import ChatRequest, Provider
from .repair import parse_plan_text, task_list

__all__ = ["stream_raw_tasks"]


class _ObjectScanner:
    """Finds the objects inside the first JSON array of a streamed answer, as they close.

    Works on text as it arrives: `feed(chunk)` returns the task objects completed by that
    chunk (parsed, with the same lenient repairs as a whole answer).
    """

    def __init__(self) -> None:
        self.buf = ""
        self.pos = 0
        self.depth = 0
        self.in_str = False
        self.esc = False
        self.array_depth: int | None = None  # depth of the tasks array once seen
        self.obj_start: int | None = None

    def feed(self, chunk: str) -> list[Any]:
        self.buf += chunk
        out: list[Any] = []
        while self.pos < len(self.buf):
            ch = self.buf[self.pos]
            if self.in_str:
                if self.esc:
                    self.esc = False
                elif ch == "\\":
                    self.esc = True
                elif ch == '"':
                    self.in_str = False
            elif ch == '"':
                self.in_str = True
            elif ch in "{[":
                self.depth += 1
                if ch == "[" and self.array_depth is None:
                    self.array_depth = self.depth
                elif (ch == "{" and self.array_depth is not None
                      and self.depth == self.array_depth + 1):
                    self.obj_start = self.pos
            elif ch in "}]":
                if (ch == "}" and self.obj_start is not None and self.array_depth is not None
                        and self.depth == self.array_depth + 1):
                    text = self.buf[self.obj_start:self.pos + 1]
                    data, _ = parse_plan_text(text)
                    if data is not None:
                        out.append(data)
                    self.obj_start = None
                self.depth -= 1
            self.pos += 1
        return out


async def stream_raw_tasks(provider: Provider, request: ChatRequest,
                           sink: list[str]) -> AsyncIterator[Any]:
    """The model's tasks, each as soon as its JSON object is complete.

    Uses the provider's optional `stream(request)` (an async iterator of text deltas) when it
    has one; otherwise the whole answer arrives at once and its tasks follow one by one.
    The full text is appended to `sink` for the record.
    """
    scanner = _ObjectScanner()
    stream = getattr(provider, "stream", None)
    if stream is not None:
        async for delta in stream(request):
            sink.append(delta)
            for obj in scanner.feed(delta):
                yield obj
        return
    response = await provider.complete(request)
    sink.append(response.text)
    data, _ = parse_plan_text(response.text)
    raw = task_list(data, []) if data is not None else None
    for obj in raw or []:
        yield obj
