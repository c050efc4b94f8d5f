"""The task distributor: which pool (and which role) fits a task, with the scores shown.

Scoring is deliberately simple and explainable: a task's role votes for its home pool, and
every distinct keyword of a pool found in the task's text adds one point. The best pool wins
unless the signal is too weak or two pools tie; then the task goes to the multi-agent
`general` pool, because a wrong specialist is worse than a generalist.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_POOLS",
    "GENERAL_POOL",
    "ROLES",
    "ROLE_POOL",
    "POOL_KEYWORDS",
    "Distribution",
    "distribute",
    "closest_role",
    "role_for_text",
    "role_hint",
]

GENERAL_POOL = "general"

#: The seeds' worker pools (openclaw config.json), plus the multi-agent fallback pool.
DEFAULT_POOLS: dict[str, dict[str, Any]] = {
    "codegen": {"max_concurrent": 3, "timeout_sec": 300, "max_retries": 2},
    "security": {"max_concurrent": 2, "timeout_sec": 300, "max_retries": 2},
    "database": {"max_concurrent": 2, "timeout_sec": 180, "max_retries": 2},
    GENERAL_POOL: {"max_concurrent": 2, "timeout_sec": 300, "max_retries": 1},
}

#: The LLM agent's roles (agents/roles.py on the llm-agent side) and the pool each one lives in.
ROLE_POOL: dict[str, str] = {
    "architect": GENERAL_POOL,
    "frontend": "codegen",
    "backend": "codegen",
    "codegen": "codegen",
    "qa": "codegen",
    "database": "database",
    "security": "security",
    "docs": GENERAL_POOL,
    "researcher": GENERAL_POOL,
    "writer": GENERAL_POOL,
}
ROLES: tuple[str, ...] = tuple(ROLE_POOL)

#: Words that mark work for a pool. Whole words (or word stems ending in *) only.
POOL_KEYWORDS: dict[str, tuple[str, ...]] = {
    "codegen": (
        "code", "implement*", "build", "frontend", "backend", "api", "endpoint*", "ui",
        "component*", "page*", "html", "css", "javascript", "typescript", "react", "vue",
        "server", "route*", "function*", "script*", "app", "website", "form*", "test*",
        "integration", "deploy*", "python", "fastapi", "flask", "node",
    ),
    "security": (
        "security", "secure", "audit*", "vulnerab*", "auth*", "login", "password*", "csrf",
        "xss", "injection", "owasp", "encrypt*", "permission*", "threat*", "rate limit*",
        "hash*", "token*", "sanitiz*", "penetration", "pentest*",
    ),
    "database": (
        "database*", "db", "schema*", "sql", "sqlite", "postgres*", "mysql", "table*",
        "migration*", "index*", "query", "queries", "orm", "model*", "data model*",
        "storage", "persist*", "mongodb", "redis", "supabase",
    ),
    GENERAL_POOL: (
        "research*", "document*", "docs", "readme", "write", "writing", "article*",
        "summar*", "plan*", "architect*", "requirement*", "design", "explain*", "report*",
        "review", "analy*", "guide", "copy", "content",
    ),
}

#: Names a model may invent for a role, mapped to ours.
_ROLE_SYNONYMS: dict[str, str] = {
    "developer": "codegen", "dev": "codegen", "engineer": "codegen", "coder": "codegen",
    "programmer": "codegen", "fullstack": "codegen", "full_stack": "codegen",
    "ui": "frontend", "ux": "frontend", "designer": "frontend", "web": "frontend",
    "ui_designer": "frontend", "api": "backend", "server": "backend", "api_designer": "backend",
    "dba": "database", "data": "database", "schema": "database", "db": "database",
    "tester": "qa", "test": "qa", "testing": "qa", "qa_engineer": "qa",
    "pentester": "security", "auditor": "security", "secops": "security",
    "pm": "architect", "manager": "architect", "planner": "architect", "lead": "architect",
    "devops": "architect", "analyst": "researcher", "research": "researcher",
    "documentation": "docs", "technical_writer": "docs", "author": "writer",
    "copywriter": "writer", "content": "writer",
}


def _compile(words: tuple[str, ...]) -> list[tuple[str, re.Pattern[str]]]:
    out = []
    for w in words:
        body = re.escape(w.rstrip("*")).replace(r"\ ", r"\s+")
        tail = r"\w*" if w.endswith("*") else ""
        out.append((w.rstrip("*"), re.compile(rf"\b{body}{tail}\b", re.IGNORECASE)))
    return out


_PATTERNS = {pool: _compile(words) for pool, words in POOL_KEYWORDS.items()}


@dataclass(slots=True)
class Distribution:
    """Where a task goes and why: every pool's score, the matched keywords, the choice."""

    pool: str
    role: str
    scores: dict[str, float]
    matched: dict[str, list[str]] = field(default_factory=dict)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"pool": self.pool, "role": self.role, "scores": self.scores,
                "matched": self.matched, "reason": self.reason}


def keyword_hits(text: str) -> dict[str, list[str]]:
    """Per pool, the distinct keywords found in `text`."""
    return {pool: [word for word, rx in pats if rx.search(text)]
            for pool, pats in _PATTERNS.items()}


def distribute(
    text: str, role: str | None = None, pools: dict[str, Any] | None = None,
    *, role_weight: float = 2.0, min_score: float = 1.0, margin: float = 0.5,
) -> Distribution:
    """Score `text` (a task's description/prompt) and its `role` against each pool.

    The role adds `role_weight` to its home pool; each keyword adds 1. The best pool wins if
    it scores at least `min_score` and beats the runner-up by more than `margin`; otherwise
    the task is ambiguous and goes to `general` (when that pool exists).
    """
    names = list(pools) if pools else list(DEFAULT_POOLS)
    hits = keyword_hits(text)
    scores: dict[str, float] = {}
    matched: dict[str, list[str]] = {}
    for name in names:
        words = hits.get(name, [])
        score = float(len(words))
        if role is not None and ROLE_POOL.get(role) == name:
            score += role_weight
        scores[name] = score
        if words:
            matched[name] = words
    ranked = sorted(names, key=lambda n: (-scores[n], n != GENERAL_POOL, names.index(n)))
    best = ranked[0]
    second = scores[ranked[1]] if len(ranked) > 1 else 0.0
    fallback = GENERAL_POOL if GENERAL_POOL in names else best
    if scores[best] < min_score:
        pool = fallback
        reason = f"no pool scored {min_score:g} or more: ambiguous, multi-agent pool"
    elif scores[best] - second <= margin and best != fallback:
        pool = fallback
        reason = (f"{best} ({scores[best]:g}) and {ranked[1]} ({second:g}) are too close: "
                  "ambiguous, multi-agent pool")
    else:
        pool, reason = best, f"{best} scored {scores[best]:g} (next {second:g})"
    chosen_role = role if role in ROLE_POOL else role_for_text(text, pool)
    return Distribution(pool=pool, role=chosen_role, scores=scores, matched=matched,
                        reason=reason)


_ROLE_HINTS: dict[str, tuple[str, ...]] = {
    "frontend": ("frontend", "ui", "page", "html", "css", "react", "component", "website",
                 "mockup", "layout", "form"),
    "backend": ("backend", "api", "endpoint", "server", "route", "booking", "reservation",
                "fastapi", "flask"),
    "database": ("database", "schema", "sql", "table", "migration", "db"),
    "security": ("security", "audit", "vulnerab", "csrf", "xss", "auth", "owasp"),
    "qa": ("test", "qa", "validate", "verify"),
    "docs": ("docs", "documentation", "readme", "guide"),
    "architect": ("architecture", "architect", "requirement", "plan", "design", "deploy"),
    "researcher": ("research", "compare", "investigate", "analy", "find"),
    "writer": ("write", "article", "story", "poem", "haiku", "essay", "summary", "email"),
}


def role_hint(text: str) -> str | None:
    """The role `text` clearly asks for (its hint words win outright), else None."""
    low = text.lower()
    scores = {role: sum(1 for h in hints if re.search(rf"\b{re.escape(h)}", low))
              for role, hints in _ROLE_HINTS.items()}
    best = max(scores.values())
    leaders = [r for r, n in scores.items() if n == best]
    return leaders[0] if best >= 1 and len(leaders) == 1 else None


def role_for_text(text: str, pool: str | None = None) -> str:
    """The role whose hint words appear most in `text`; ties go to the pool's usual role."""
    low = text.lower()
    best, best_score = None, 0
    for role, hints in _ROLE_HINTS.items():
        score = sum(1 for h in hints if re.search(rf"\b{re.escape(h)}", low))
        if pool is not None and ROLE_POOL.get(role) == pool:
            score += 0.5  # type: ignore[assignment]
        if score > best_score:
            best, best_score = role, score
    if best is not None and best_score >= 1:
        return best
    return {"codegen": "codegen", "security": "security", "database": "database"}.get(
        pool or "", "writer")


def closest_role(name: str, text: str = "") -> tuple[str, str]:
    """Map a role a model invented to one of ours: (role, how it was matched)."""
    key = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
    if key in ROLE_POOL:
        return key, "exact"
    if key in _ROLE_SYNONYMS:
        return _ROLE_SYNONYMS[key], f"synonym of {_ROLE_SYNONYMS[key]!r}"
    for part in key.split("_"):
        if part in ROLE_POOL:
            return part, f"contains {part!r}"
        if part in _ROLE_SYNONYMS:
            return _ROLE_SYNONYMS[part], f"contains {part!r}"
    close = difflib.get_close_matches(key, list(ROLE_POOL) + list(_ROLE_SYNONYMS), n=1,
                                      cutoff=0.75)
    if close:
        role = close[0] if close[0] in ROLE_POOL else _ROLE_SYNONYMS[close[0]]
        return role, f"spelled like {close[0]!r}"
    role = role_for_text(text)
    return role, "chosen from the task's text"
