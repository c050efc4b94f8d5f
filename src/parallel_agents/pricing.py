"""Prices per model, usage -> USD, and worst-case estimates for the budget gate.

Prices change; the built-in table is a convenience and a plan's `prices:` overrides it. The
embedded `local:` provider is always free. A model with no known price costs $0 in reports,
but a run with a budget refuses to start it (an unknown price would make the budget a lie).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from .providers.base import ChatRequest, Usage

__all__ = [
    "ModelPrice",
    "BUILTIN_PRICES",
    "PriceTable",
    "estimate_input_tokens",
    "estimate_prompt_tokens",
    "sum_usage",
]

FREE_PROVIDERS = frozenset({"local"})


class ModelPrice(BaseModel):
    """USD per million tokens. Cached input defaults to the input price."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cached_input_per_mtok: float | None = Field(default=None, ge=0)


def _p(i: float, o: float, c: float | None = None) -> ModelPrice:
    return ModelPrice(input_per_mtok=i, output_per_mtok=o, cached_input_per_mtok=c)


#: List prices at the time of writing; override them in the plan under `prices:`.
BUILTIN_PRICES: dict[str, ModelPrice] = {
    "gpt-4o-mini": _p(0.15, 0.60, 0.075),
    "gpt-4o": _p(2.50, 10.0, 1.25),
    "gpt-4.1": _p(2.00, 8.00, 0.50),
    "gpt-4.1-mini": _p(0.40, 1.60, 0.10),
    "gpt-4.1-nano": _p(0.10, 0.40, 0.025),
    "claude-3-5-haiku-latest": _p(0.80, 4.00, 0.08),
    "claude-3-5-sonnet-latest": _p(3.00, 15.0, 0.30),
    "claude-sonnet-4-0": _p(3.00, 15.0, 0.30),
    "claude-opus-4-0": _p(15.0, 75.0, 1.50),
}


class PriceTable:
    """Looks up a `PROVIDER:MODEL` spec: exact spec, then the bare model name."""

    def __init__(self, overrides: Mapping[str, ModelPrice] | None = None) -> None:
        self.prices: dict[str, ModelPrice] = dict(BUILTIN_PRICES)
        self.prices.update(overrides or {})

    def price(self, spec: str) -> ModelPrice | None:
        from .providers.base import split_model

        provider, model = split_model(spec)
        if provider in FREE_PROVIDERS:
            return ModelPrice(input_per_mtok=0, output_per_mtok=0)
        return self.prices.get(f"{provider}:{model}") or self.prices.get(model)

    def cost(self, spec: str, usage: Usage) -> float:
        """USD for one call's usage; $0 when the price is unknown."""
        price = self.price(spec)
        if price is None:
            return 0.0
        cached = min(usage.cached_tokens, usage.input_tokens)
        cached_rate = (price.cached_input_per_mtok if price.cached_input_per_mtok is not None
                       else price.input_per_mtok)
        return ((usage.input_tokens - cached) * price.input_per_mtok
                + cached * cached_rate
                + usage.output_tokens * price.output_per_mtok) / 1_000_000

    def worst_case(self, spec: str, input_tokens: int, max_tokens: int) -> float | None:
        """The most a call can cost: every input token uncached, every output token used."""
        price = self.price(spec)
        if price is None:
            return None
        return (input_tokens * price.input_per_mtok
                + max_tokens * price.output_per_mtok) / 1_000_000


def estimate_input_tokens(text_chars: int, messages: int = 1) -> int:
    """A deliberately high token estimate: 1 token per 3 characters (English averages ~4),
    plus per-message framing. The budget gate must over- rather than under-estimate."""
    return text_chars // 3 + 1 + 8 * messages


def estimate_prompt_tokens(request: ChatRequest) -> int:
    chars = sum(len(m.content) + sum(len(str(c.arguments)) + len(c.name) for c in m.tool_calls)
                for m in request.messages)
    chars += sum(len(t.name) + len(t.description) + len(str(t.parameters)) for t in request.tools)
    if request.json_schema:
        chars += len(str(request.json_schema))
    return estimate_input_tokens(chars, len(request.messages))


def sum_usage(usages: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {"input_tokens": 0, "output_tokens": 0, "cached_tokens": 0}
    for usage in usages:
        for key in total:
            total[key] += int(usage.get(key, 0) or 0)
    return total
