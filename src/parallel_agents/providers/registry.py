"""`get_provider("openai:gpt-4o-mini", config)`: from a model spec to a ready Provider.

Provider modules are imported only when a spec names them (the SDK imports cost ~0.5 s each).
Configuration is the plan's `providers:` mapping merged over the usual environment variables:

    providers:
      openai:    {base_url: http://localhost:11434/v1, api_key_env: OLLAMA_KEY, rpm: 500, tpm: 200000}
      anthropic: {rpm: 50}
      local:     {n_ctx: 4096, max_tokens: 256}

Env: OPENAI_API_KEY, OPENAI_BASE_URL, ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL (the plan wins).
A remote provider with neither a key nor a base_url falls back to `local:` - so a plan written
for OpenAI runs offline on the embedded model with no setup, and `Resolution.fallback` says so.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._exceptions import UsageError
from .base import Provider, split_model

__all__ = [
    "KNOWN_PROVIDERS",
    "LOCAL_MODEL",
    "ProviderSettings",
    "Resolution",
    "get_provider",
    "parse_settings",
    "resolve",
]

#: name -> (module, class). `openai` is any OpenAI-compatible server.
KNOWN_PROVIDERS: dict[str, tuple[str, str]] = {
    "local": ("parallel_agents.providers.local", "LocalProvider"),
    "openai": ("parallel_agents.providers.openai_compat", "OpenAIProvider"),
    "anthropic": ("parallel_agents.providers.anthropic", "AnthropicProvider"),
}
_ENV = {"openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
        "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")}
LOCAL_MODEL = "smollm2-135m-instruct"


class ProviderSettings(BaseModel):
    """One entry of the plan's `providers:` mapping. Unknown keys are errors (typos)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = None
    api_key_env: str | None = Field(default=None, description="env var holding the key")
    rpm: int | None = Field(default=None, ge=1, description="requests per minute")
    tpm: int | None = Field(default=None, ge=1, description="tokens per minute")
    max_concurrency: int = Field(default=64, ge=1)
    timeout_sec: float = Field(default=60.0, gt=0)
    # local: only
    model_path: str | None = None
    n_ctx: int = Field(default=4096, ge=256)
    n_threads: int | None = Field(default=None, ge=1)
    max_tokens: int = Field(default=512, ge=1, description="local: cap on tokens per answer")


def parse_settings(config: Mapping[str, Any] | None) -> dict[str, ProviderSettings]:
    """Validate a `providers:` mapping; every problem is reported with its location."""
    out: dict[str, ProviderSettings] = {}
    problems: list[str] = []
    for name, raw in (config or {}).items():
        if isinstance(raw, ProviderSettings):
            out[name] = raw
            continue
        if name not in KNOWN_PROVIDERS:
            problems.append(f"providers.{name}: {_unknown(name)}")
            continue
        try:
            out[name] = ProviderSettings.model_validate(raw or {})
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"])
                problems.append(f"providers.{name}.{loc}: {err['msg']}")
    if problems:
        raise UsageError("invalid providers config:\n" + "\n".join(f"  - {p}" for p in problems))
    return out


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name, list(KNOWN_PROVIDERS), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (f"unknown provider {name!r}{hint} (known: {', '.join(sorted(KNOWN_PROVIDERS))}; "
            "write model: PROVIDER:MODEL)")


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a spec resolved to. `fallback` explains a switch to `local:` (None otherwise)."""

    provider: Provider
    provider_name: str
    model: str
    fallback: str | None = None


_LOCAL: dict[tuple[Any, ...], Provider] = {}


def _class(name: str) -> type[Provider]:
    module, cls = KNOWN_PROVIDERS[name]
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def _local(settings: ProviderSettings) -> Provider:
    """One LocalProvider (so one loaded model) per distinct local configuration per process."""
    key = (settings.model_path, settings.n_ctx, settings.n_threads, settings.max_tokens)
    if key not in _LOCAL:
        _LOCAL[key] = _class("local")(model_path=settings.model_path, n_ctx=settings.n_ctx,
                                      n_threads=settings.n_threads,
                                      max_tokens_cap=settings.max_tokens)
    return _LOCAL[key]


def resolve(spec: str, config: Mapping[str, Any] | None = None, *,
            env: Mapping[str, str] | None = None, record_dir: str | Path | None = None,
            replay_dir: str | Path | None = None) -> Resolution:
    """Resolve `PROVIDER:MODEL` to a provider instance (remote clients are not cached: they
    belong to the event loop that uses them; their rate limiters are shared process-wide)."""
    env = os.environ if env is None else env
    name, model = split_model(spec)
    if name not in KNOWN_PROVIDERS:
        raise UsageError(f"model {spec!r}: {_unknown(name)}")
    if not model and name != "local":
        example = "gpt-4o-mini" if name == "openai" else "claude-3-5-haiku-latest"
        raise UsageError(f"model {spec!r}: no model name after '{name}:' "
                         f"(write e.g. {name}:{example})")
    settings = parse_settings(config)
    mine = settings.get(name, ProviderSettings())
    fallback = None
    remote: tuple[str | None, str | None, str] | None = None
    if name == "local":
        model = model or LOCAL_MODEL
    else:
        key_var, url_var = _ENV[name]
        key_env = mine.api_key_env or key_var
        api_key = env.get(key_env) or None
        base_url = mine.base_url or env.get(url_var) or None
        if api_key is None and base_url is None:
            fallback = (f"{spec}: no ${key_env} and no base_url configured, so it runs on the "
                        f"embedded local:{LOCAL_MODEL}")
            name, model, mine = "local", LOCAL_MODEL, settings.get("local", ProviderSettings())
        else:
            remote = (api_key, base_url, key_env)
    provider: Provider
    if replay_dir is not None:  # same name/model as when recorded in the same environment
        from .replay import ReplayProvider

        return Resolution(ReplayProvider(replay_dir, name), name, model, fallback)
    if remote is None:
        provider = _local(mine)
    else:
        api_key, base_url, key_env = remote
        provider = _class(name)(api_key=api_key, base_url=base_url, key_env=key_env,
                                rpm=mine.rpm, tpm=mine.tpm, timeout=mine.timeout_sec,
                                max_concurrency=mine.max_concurrency)
    if record_dir is not None:
        from .replay import RecordingProvider

        provider = RecordingProvider(provider, record_dir, name)
    return Resolution(provider, name, model, fallback)


def get_provider(spec: str, config: Mapping[str, Any] | None = None, **options: Any) -> Provider:
    """The Provider for `spec` (see `resolve` for the model name and fallback reason)."""
    return resolve(spec, config, **options).provider
