"""The run's spending limit as pure bookkeeping: reservations of worst-case cost, then actuals.

Nothing may call a paid model without first reserving that call's worst-case cost (all the
input tokens it could send, plus `max_tokens` of output, at the model's price). A reservation
fails if `spent + reserved + amount` would pass the limit, so the money committed never
exceeds the budget; when the call ends its reservation is replaced by the actual cost, which is
at most the worst case. Overspending is therefore bounded by how far actual costs can exceed
the estimates of calls already in flight, never by new calls.

The scheduler reserves a task's first call when it decides to start the task; the LLM agent
reserves each further call of its tool loop through the executor. No clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["Budget", "BUDGET_EXHAUSTED"]

BUDGET_EXHAUSTED = "budget exhausted"


class Budget:
    """Spending limit in USD with named reservations (`key` = task id or (task id, call n))."""

    __slots__ = ("limit", "spent", "_reserved", "_reserved_total")

    def __init__(self, limit_usd: float) -> None:
        if limit_usd < 0:
            raise ValueError(f"budget must be at least 0, got {limit_usd}")
        self.limit = float(limit_usd)
        self.spent = 0.0
        self._reserved: dict[Hashable, float] = {}
        self._reserved_total = 0.0

    @property
    def reserved(self) -> float:
        return self._reserved_total

    @property
    def remaining(self) -> float:
        """What a new reservation may take now."""
        return max(0.0, self.limit - self.spent - self._reserved_total)

    @property
    def outstanding(self) -> int:
        """Reservations not yet settled (calls or task starts in flight)."""
        return len(self._reserved)

    def holds(self, key: Hashable) -> float:
        return self._reserved.get(key, 0.0)

    def try_reserve(self, key: Hashable, amount: float) -> bool:
        """Reserve `amount` under `key` if it fits; a key already held is topped up."""
        if amount < 0:
            raise ValueError(f"cannot reserve a negative amount ({amount})")
        # A tiny tolerance so a budget of exactly N calls admits N, not N-1, after rounding.
        if self.spent + self._reserved_total + amount > self.limit * (1 + 1e-9) + 1e-12:
            return False
        self._reserved[key] = self._reserved.get(key, 0.0) + amount
        self._reserved_total += amount
        return True

    def release(self, key: Hashable) -> float:
        """Drop a reservation without spending it (the call never happened)."""
        amount = self._reserved.pop(key, 0.0)
        self._reserved_total = max(0.0, self._reserved_total - amount)
        return amount

    def settle(self, key: Hashable, actual: float) -> None:
        """The call under `key` ended and cost `actual`: replace the reservation by it."""
        self.release(key)
        self.spent += max(0.0, actual)

    def transfer(self, old: Hashable, new: Hashable) -> float:
        """Move a reservation to a new key (a task's start reservation to its first call)."""
        amount = self._reserved.pop(old, 0.0)
        if amount:
            self._reserved[new] = self._reserved.get(new, 0.0) + amount
        return amount
