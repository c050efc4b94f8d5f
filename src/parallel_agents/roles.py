"""Agent roles: a named system prompt plus defaults (model, pool, limits) for LLM tasks.

A plan task says `agent: backend` instead of repeating a system prompt and a model on every
task. Built-in roles cover the usual software-project split (and the seeds' codegen /
security / database pools); a plan adds or overrides roles under `roles:`, and a YAML file
named by `$PARALLEL_AGENTS_ROLES` adds site-wide ones. Precedence: plan > file > built-in.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from .plan import Plan, Task

__all__ = [
    "Role",
    "BUILTIN_ROLES",
    "DEFAULT_MODEL",
    "DEFAULT_MAX_ITERATIONS",
    "DEFAULT_MAX_TOKENS",
    "ROLES_FILE_ENV",
    "LLMSettings",
    "all_roles",
    "load_roles_file",
    "llm_settings",
    "default_model",
]

#: The embedded model: runs offline with no key and no server (see providers/local.py).
DEFAULT_MODEL = "local:smollm2-135m-instruct"
DEFAULT_MAX_ITERATIONS = 10
DEFAULT_MAX_TOKENS = 512
ROLES_FILE_ENV = "PARALLEL_AGENTS_ROLES"
MODEL_ENV = "PARALLEL_AGENTS_MODEL"


class Role(BaseModel):
    """A role's system prompt and the defaults its tasks inherit unless they set their own."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    system_prompt: str = Field(min_length=1)
    description: str | None = None
    model: str | None = None
    pool: str | None = None
    max_iterations: int | None = Field(default=None, ge=1, le=100)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)


_TOOLS_HINT = (
    " You can read_file, write_file and list_files in the task's workspace; write each "
    "deliverable to a file with write_file, then answer with a short summary of what you did."
)


def _role(prompt: str, description: str) -> Role:
    return Role(system_prompt=prompt + _TOOLS_HINT, description=description)


BUILTIN_ROLES: dict[str, Role] = {
    "architect": _role(
        "You are a software architect. Break the problem into components with clear "
        "interfaces, name the trade-offs, and keep the design as simple as the requirements "
        "allow.", "system design and component boundaries"),
    "frontend": _role(
        "You are a frontend engineer. Build accessible, responsive user interfaces with plain, "
        "well-structured HTML, CSS and JavaScript (or the framework the task names).",
        "user interfaces"),
    "backend": _role(
        "You are a backend engineer. Write small, correct HTTP APIs and services with input "
        "validation, clear errors and tests.", "APIs and services"),
    "database": _role(
        "You are a database engineer. Design normalised schemas with keys, constraints and "
        "indexes that match the queries, and write migrations as SQL.", "schemas and queries"),
    "security": _role(
        "You are a security engineer. Audit the given design or code for vulnerabilities "
        "(injection, authentication, authorisation, CSRF, secrets, input validation) and list "
        "concrete findings with severity and a fix for each.", "security review"),
    "qa": _role(
        "You are a QA engineer. Write focused test plans and automated tests that cover the "
        "main paths, edge cases and failure modes.", "tests and test plans"),
    "docs": _role(
        "You are a technical writer for developers. Write clear, accurate documentation with "
        "short examples.", "developer documentation"),
    "researcher": _role(
        "You are a researcher. Collect the relevant facts, say where each comes from and how "
        "sure you are, and summarise them concisely.", "research and summaries"),
    "writer": _role(
        "You are a professional writer. Write clear, well-structured prose for the stated "
        "audience.", "prose"),
    "codegen": _role(
        "You are a code generation agent. Produce complete, working source files for the "
        "requested feature; no placeholders.", "code generation (the seeds' CodeGen pool)"),
}


@dataclass(frozen=True, slots=True)
class LLMSettings:
    """What an LLM task runs with, once task, role and defaults are merged."""

    role: str | None
    system_prompt: str
    model: str
    max_iterations: int
    max_tokens: int
    temperature: float


def load_roles_file(path: str | Path) -> dict[str, Role]:
    """Roles from a YAML mapping `{name: {system_prompt, model, pool, ...}}`."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read roles file {path} (${ROLES_FILE_ENV}): {exc}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"roles file {path}: must be a mapping of role name -> settings")
    roles: dict[str, Role] = {}
    for name, raw in data.items():
        try:
            roles[str(name)] = Role.model_validate(raw or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"roles file {path}: role {name!r}: {loc}: {first['msg']}") from None
    return roles


def _file_roles() -> dict[str, Role]:
    path = os.environ.get(ROLES_FILE_ENV)
    return load_roles_file(path) if path else {}


def all_roles(plan_roles: Mapping[str, Role] | None = None) -> dict[str, Role]:
    """Every role visible to a plan: built-in, then the roles file, then the plan's own."""
    roles = dict(BUILTIN_ROLES)
    roles.update(_file_roles())
    roles.update(plan_roles or {})
    return roles


_configured_model: list[str] = []  # the config file's `defaults.model`, set by the CLI


def configure_default_model(spec: str | None) -> None:
    """The model for LLM tasks that name none, from the config file (the CLI calls this once
    it has read the config); PARALLEL_AGENTS_MODEL still wins, as for every setting."""
    _configured_model[:] = [spec] if spec else []


# The model a run started with (the executor sets it for the run's tasks): a resumed run
# keeps its model whatever the environment or config of the process resuming it says.
_run_model: ContextVar[str | None] = ContextVar("parallel_agents_run_model", default=None)


def default_model() -> str:
    """The model of LLM tasks that name none (and whose role names none): the run's own if
    it was set (see `run_default_model`), else PARALLEL_AGENTS_MODEL, the config's
    `defaults.model`, the built-in local model."""
    return _run_model.get() or os.environ.get(MODEL_ENV) or (
        _configured_model[0] if _configured_model else DEFAULT_MODEL)


@contextmanager
def run_default_model(spec: str | None) -> Iterator[None]:
    """Within this block (and asyncio tasks created in it), `default_model()` is `spec`."""
    token = _run_model.set(spec or None)
    try:
        yield
    finally:
        _run_model.reset(token)


def llm_settings(task: Task, plan: Plan | None = None) -> LLMSettings:
    """Merge a task with its role: the task's own settings win, then the role's, then defaults."""
    role = None
    if task.agent is not None:
        role = all_roles(plan.roles if plan is not None else None).get(task.agent)
    system = role.system_prompt if role else (
        "You are a helpful assistant that completes the task you are given." + _TOOLS_HINT)
    return LLMSettings(
        role=task.agent,
        system_prompt=system,
        model=task.model or (role.model if role else None) or default_model(),
        max_iterations=task.max_iterations or (role.max_iterations if role else None)
        or DEFAULT_MAX_ITERATIONS,
        max_tokens=task.max_tokens or (role.max_tokens if role else None) or DEFAULT_MAX_TOKENS,
        temperature=role.temperature if role and role.temperature is not None else 0.2,
    )


def role_names(plan_roles: Mapping[str, Any] | None = None) -> list[str]:
    return sorted(all_roles(plan_roles))
