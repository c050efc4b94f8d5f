"""Record/replay cassettes: `--record DIR` saves every answer, `--replay DIR` serves them back.

One JSON file per request, named by `request_key()`: the sha256 of the provider, the model and
`ChatRequest.canonical()`. The canonical request holds no credentials (keys live in the provider
client, never in the request); on top of that, every known secret value (the API-key env vars) and
anything shaped like a key is redacted from what is written. A replay miss fails at once and
is not retryable: the cassette will not grow by trying again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ._http import redact
from .base import ChatRequest, ChatResponse, Provider, ProviderError, ToolCall, Usage

__all__ = ["RecordingProvider", "ReplayProvider", "request_key", "secret_values"]

#: env vars whose values must never reach a cassette
SECRET_ENV_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")


def secret_values(extra: list[str | None] | None = None) -> list[str]:
    values = [os.environ.get(name) for name in SECRET_ENV_VARS] + list(extra or [])
    return [v for v in values if v]


def request_key(provider: str, request: ChatRequest) -> str:
    payload = f"{provider}\n{request.model}\n{request.canonical()}"
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _response_to_dict(response: ChatResponse) -> dict[str, Any]:
    return {"text": response.text,
            "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments}
                           for c in response.tool_calls],
            "usage": response.usage.to_dict(), "model": response.model,
            "finish_reason": response.finish_reason}


def _response_from_dict(data: dict[str, Any]) -> ChatResponse:
    return ChatResponse(
        text=data.get("text", ""),
        tool_calls=[ToolCall(c["id"], c["name"], c.get("arguments", {}))
                    for c in data.get("tool_calls", [])],
        usage=Usage(**data.get("usage", {})), model=data.get("model", ""),
        finish_reason=data.get("finish_reason", "stop"))


class RecordingProvider(Provider):
    """Passes calls to `inner` and writes each answer to `directory/<key>.json`."""

    def __init__(self, inner: Provider, directory: str | Path, provider: str | None = None,
                 secrets: list[str | None] | None = None) -> None:
        self.inner = inner
        self.name = provider or inner.name
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._secrets = secrets

    async def complete(self, request: ChatRequest) -> ChatResponse:
        response = await self.inner.complete(request)
        key = request_key(self.name, request)
        record = {"key": key, "provider": self.name, "model": request.model,
                  "request": json.loads(request.canonical()),
                  "response": _response_to_dict(response)}
        text = redact(json.dumps(record, indent=2, sort_keys=True),
                      secret_values(self._secrets))
        # write-then-rename: a crash never leaves a half-written cassette behind
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, self.directory / f"{key}.json")
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class ReplayProvider(Provider):
    """Answers from cassettes only; never touches the network."""

    def __init__(self, directory: str | Path, provider: str) -> None:
        self.name = provider
        self.directory = Path(directory)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        key = request_key(self.name, request)
        path = self.directory / f"{key}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ProviderError(
                f"replay miss: no cassette for {self.name}:{request.model} request {key} in "
                f"{self.directory} (the request differs from the recorded one: re-record with "
                f"--record {self.directory})", retryable=False, provider=self.name) from None
        except (OSError, ValueError) as exc:
            raise ProviderError(f"replay: cannot read cassette {path}: {exc}", retryable=False,
                                provider=self.name) from exc
        return _response_from_dict(data["response"])
