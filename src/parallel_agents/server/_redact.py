"""Keeps secrets out of everything the gateway sends or stores.

A plan may carry an API key in a task's `env`, and a program may echo it in its output or
error. Rather than trusting every writer, the gateway passes each event and response through
one `Redactor` that knows the secret values (plan env values under secret-looking names, the
server's own tokens, the server process's secret-looking environment variables, and passwords
or keys inside URLs in its environment, like `OPENAI_BASE_URL=http://user:PASSWORD@...`) and
replaces them wherever they appear.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .._urls import url_secrets

__all__ = ["MASK", "SECRET_NAME", "Redactor"]

MASK = "***"
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH|COOKIE|SESSION)",
                         re.IGNORECASE)
# Shorter values are too likely to be ordinary words or numbers ("1", "true") to mask safely.
_MIN_SECRET_LEN = 6


class Redactor:
    """Replaces known secret values by `***` in strings, lists and dicts (recursively)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(secrets)

    @classmethod
    def from_environment(cls, extra: Iterable[str] = (),
                         environ: Mapping[str, str] | None = None) -> Redactor:
        environ = os.environ if environ is None else environ
        return cls([*extra, *(v for k, v in environ.items() if SECRET_NAME.search(k)),
                    *(s for v in environ.values() if "://" in v for s in url_secrets(v))])

    def add(self, secrets: Iterable[str]) -> None:
        new = {s for s in secrets if isinstance(s, str) and len(s) >= _MIN_SECRET_LEN}
        if new - self._secrets:
            self._secrets |= new
            # Longest first, so a secret containing another is masked whole.
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def child(self, secrets: Iterable[str]) -> Redactor:
        """A redactor that also masks `secrets` (for one execution's plan)."""
        out = Redactor(self._secrets)
        out.add(secrets)
        return out

    def __call__(self, value: Any) -> Any:
        if self._pattern is None:
            return value
        return self._walk(value, self._pattern)

    def _walk(self, value: Any, pattern: re.Pattern[str]) -> Any:
        if isinstance(value, str):
            return pattern.sub(MASK, value) if value else value
        if isinstance(value, dict):
            return {k: self._walk(v, pattern) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._walk(v, pattern) for v in value]
        return value


def plan_secrets(env_maps: Iterable[Mapping[str, str]]) -> list[str]:
    """Values of secret-looking variables in the tasks' `env` maps."""
    return [v for env in env_maps for k, v in env.items() if SECRET_NAME.search(k)]
