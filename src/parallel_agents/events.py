"""Typed run events and the fan-out bus that delivers them to subscribers.

One event type with a `kind` keeps the vocabulary identical everywhere an event travels: the
terminal, the store, the SSE stream and the metrics all see the same names.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Event", "EventKind", "EventBus", "EVENT_KINDS"]

log = logging.getLogger("parallel_agents")

EventKind = Literal[
    "run_started",
    "task_queued",
    "task_started",
    "task_progress",
    "task_succeeded",
    "task_failed",
    "task_retrying",
    "task_skipped",
    "task_cancelled",
    "run_finished",
]
EVENT_KINDS: tuple[str, ...] = EventKind.__args__  # type: ignore[attr-defined]


@dataclass(slots=True)
class Event:
    kind: EventKind
    run_id: str
    time: float  # unix seconds
    task_id: str | None = None
    attempt: int | None = None
    message: str | None = None
    data: dict[str, Any] | None = None
    seq: int = 0  # position in the run's event stream, assigned by the bus (1-based)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seq": self.seq, "kind": self.kind, "run_id": self.run_id,
                               "time": self.time}
        if self.task_id is not None:
            out["task_id"] = self.task_id
        if self.attempt is not None:
            out["attempt"] = self.attempt
        if self.message is not None:
            out["message"] = self.message
        if self.data:
            out["data"] = self.data
        return out


Subscriber = Callable[[Event], None]


@dataclass(slots=True)
class EventBus:
    """Delivers each event, in order, to every subscriber.

    Subscribers are plain callables run synchronously in the executor's loop: they must be
    quick (the store batches its writes; the terminal redraws on a timer). A subscriber that
    raises is logged and dropped rather than allowed to break the run.
    """

    subscribers: list[Subscriber] = field(default_factory=list)
    seq: int = 0

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        self.subscribers.append(fn)

        def unsubscribe() -> None:
            if fn in self.subscribers:
                self.subscribers.remove(fn)

        return unsubscribe

    def publish(self, event: Event) -> None:
        """Number `event` (the next in the stream) and deliver it."""
        self.seq += 1
        event.seq = self.seq
        self.deliver(event)

    def deliver(self, event: Event) -> None:
        """Deliver an event already numbered by the caller."""
        for fn in tuple(self.subscribers):
            try:
                fn(event)
            except Exception:  # noqa: BLE001 - one bad subscriber must not stop the run
                log.exception("event subscriber %r failed; unsubscribing it", fn)
                if fn in self.subscribers:
                    self.subscribers.remove(fn)

    async def stream(self) -> AsyncIterator[Event]:
        """Async iteration over events from now until `run_finished`."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        unsubscribe = self.subscribe(queue.put_nowait)
        try:
            while True:
                event = await queue.get()
                yield event
                if event.kind == "run_finished":
                    return
        finally:
            unsubscribe()
