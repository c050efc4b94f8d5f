"""Credentials inside URLs (`user:PASSWORD@`, `?api_key=...`): masked when shown, refused in files.

A provider's base_url may carry a password or a key (a proxy with basic auth, a server that
takes its key as a query parameter). Error messages that name the URL land in events, stores
and logs, so they show it masked; and such a URL belongs in the environment
(`OPENAI_BASE_URL`), never in a plan or a config file, which get shared, committed and stored.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["SECRET_PARAM", "mask_url", "url_credentials", "url_credentials_problem",
           "url_secrets"]

#: Query parameters whose value is a credential.
SECRET_PARAM = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|PWD|CREDENTIAL|AUTH|SIGNATURE)",
                          re.IGNORECASE)


def mask_url(url: str) -> str:
    """Drop credentials a URL may carry (user:pass@, query strings)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _secret_params(query: str) -> list[tuple[str, str]]:
    """(name, raw value) of the query's parameters that hold a credential."""
    out = []
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if value and SECRET_PARAM.search(unquote(name)):
            out.append((unquote(name), value))
    return out


def _credentials(url: str) -> tuple[str | None, list[tuple[str, str]]]:
    """(the userinfo password, the credential query parameters) of `url`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None, []
    return parts.password, _secret_params(parts.query)


def url_credentials(url: str) -> list[str]:
    """What credentials `url` carries, described without their values (empty: none)."""
    password, params = _credentials(url)
    found = ["a password (user:PASSWORD@)"] if password else []
    return found + [f"the query parameter {name[:40]!r}" for name, _ in params]


def url_secrets(url: str) -> list[str]:
    """The credential values in `url`, as written and decoded (to mask them anywhere)."""
    password, params = _credentials(url)
    raw = [value for _, value in params] + ([password] if password else [])
    return [*raw, *(unquote(v) for v in raw)]


def url_credentials_problem(url: str, where: str) -> str | None:
    """Why a base_url in `where` (a plan, a config file) is refused, or None if it is clean.

    The value is never repeated: it holds a live credential.
    """
    found = url_credentials(url)
    if not found:
        return None
    return (f"refusing to store a secret in {where}: base_url carries {' and '.join(found)} "
            f"(the value is not shown). Remove it, and give the URL with its credentials in the "
            f"environment instead (OPENAI_BASE_URL for openai:, ANTHROPIC_BASE_URL for "
            f"anthropic:), which only this machine sees")
