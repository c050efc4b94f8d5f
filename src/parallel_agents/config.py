"""Settings from a config file, the environment and the command line, with their sources.

Two file shapes are accepted: `parallel-agents.toml` (sections `defaults`, `pools`,
`providers`, `budget`, `coordinator`) and the seeds' `config.json`, whose
`parallel_execution` section holds `worker_pools` and `pm_coordinator` (other top-level keys
of that file belong to other programs and are left alone).

Precedence, highest first: command line > environment (`PARALLEL_AGENTS_*`) > the plan's
own setting > config file > built-in defaults. Pools from the config apply to plans that do
not declare them; a plan's own pool of the same name wins.

API keys never live here: a provider names the environment variable that holds its key
(`api_key_env`), and a raw key in the file is refused, because config files get committed; so
is a base_url carrying credentials (`user:PASSWORD@`, `?api_key=`): that goes in the
environment (`OPENAI_BASE_URL`), as in plans.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ._exceptions import UsageError
from ._urls import mask_url, url_credentials_problem
from .plan import (STRATEGIES, Plan, Pool, check_model_spec, check_provider_name,
                   parse_plan_text)

__all__ = ["Config", "ConfigError", "Setting", "load_config", "load_plan", "find_config_file",
           "effective_run_options", "ENV_VARS", "CONFIG_FILE_NAMES"]

CONFIG_FILE_NAMES = ("parallel-agents.toml", "config.json")

_STORE_DEFAULT = ".parallel_agents/runs.db"

#: section -> key -> (type, built-in default)
_SCALARS: dict[str, dict[str, tuple[type, Any]]] = {
    "defaults": {
        "strategy": (str, "dependency"),
        "max_workers": (int, None),
        "fail_fast": (bool, False),
        "store": (str, _STORE_DEFAULT),
        "model": (str, None),
    },
    "budget": {
        "max_cost_usd": (float, None),
        "max_tokens": (int, None),
    },
    "coordinator": {
        "decomposition_model": (str, None),
        "reasoning_effort": (str, None),
    },
}
_PROVIDER_KEYS: dict[str, type] = {"base_url": str, "api_key_env": str, "rpm": int, "tpm": int}
_SECRET_KEYS = {"api_key", "apikey", "key", "token", "secret", "password", "access_token"}
_SECTIONS = (*_SCALARS, "pools", "providers")

#: environment variable -> dotted setting
ENV_VARS: dict[str, str] = {
    "PARALLEL_AGENTS_STRATEGY": "defaults.strategy",
    "PARALLEL_AGENTS_MAX_WORKERS": "defaults.max_workers",
    "PARALLEL_AGENTS_FAIL_FAST": "defaults.fail_fast",
    "PARALLEL_AGENTS_STORE": "defaults.store",
    "PARALLEL_AGENTS_MODEL": "defaults.model",
    "PARALLEL_AGENTS_BUDGET_USD": "budget.max_cost_usd",
    "PARALLEL_AGENTS_MAX_TOKENS": "budget.max_tokens",
}
CONFIG_ENV = "PARALLEL_AGENTS_CONFIG"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConfigError(UsageError):
    """The config (file, environment or option) is invalid; lists every problem found."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        where = f" in {source}" if source else ""
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__("\n".join([f"invalid config{where}: {len(problems)} {noun}",
                                    *(f"  - {p}" for p in problems)]))


@dataclass(frozen=True, slots=True)
class Setting:
    value: Any
    source: str  # "default" | "config file X" | "env NAME" | "option --x" | "plan"


@dataclass(slots=True)
class Config:
    """The effective settings, each with where it came from."""

    settings: dict[str, Setting] = field(default_factory=dict)  # "defaults.strategy" -> ...
    pools: dict[str, tuple[Pool, str]] = field(default_factory=dict)
    providers: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    file: Path | None = None

    def get(self, key: str) -> Any:
        return self.settings[key].value

    def source(self, key: str) -> str:
        return self.settings[key].source

    def provider_settings(self) -> dict[str, dict[str, Any]]:
        """The `[providers.*]` sections, without where each came from."""
        return {name: settings for name, (settings, _) in self.providers.items()}

    def shown(self) -> dict[str, Setting]:
        """Every setting flattened for display, secrets masked (never a key's value)."""
        out = dict(self.settings)
        for name, (pool, src) in sorted(self.pools.items()):
            for key, value in pool.model_dump().items():
                out[f"pools.{name}.{key}"] = Setting(
                    value, src if key in pool.model_fields_set else "default")
        for name, (prov, src) in sorted(self.providers.items()):
            for key, value in prov.items():
                if key == "api_key_env":
                    state = "set" if os.environ.get(value) else "not set"
                    value = f"{value} ({state} in the environment)"
                elif key == "base_url":
                    value = mask_url(value)
                out[f"providers.{name}.{key}"] = Setting(value, src)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "config_file": str(self.file) if self.file else None,
            "settings": {k: {"value": s.value, "source": s.source}
                         for k, s in self.shown().items()},
        }


# -- loading --------------------------------------------------------------------------------
def find_config_file(cwd: Path | None = None, env: Mapping[str, str] | None = None) -> Path | None:
    """$PARALLEL_AGENTS_CONFIG, else ./parallel-agents.toml, else ./config.json when it has a
    `parallel_execution` section."""
    env = os.environ if env is None else env
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    cwd = cwd or Path.cwd()
    toml_path = cwd / "parallel-agents.toml"
    if toml_path.is_file():
        return toml_path
    json_path = cwd / "config.json"
    if json_path.is_file():
        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # somebody else's file; only an explicit --config makes it ours
        if isinstance(data, dict) and "parallel_execution" in data:
            return json_path
    return None


def _read_file(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(["no such config file (give a parallel-agents.toml or a config.json "
                           "with a parallel_execution section)"], source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read the file: {exc}"], source) from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError([f"line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}"],
                              source) from None
        if not isinstance(data, dict) or "parallel_execution" not in data:
            raise ConfigError(["a JSON config needs a top-level `parallel_execution` section"],
                              source)
        return _from_seed_json(data["parallel_execution"], source)
    if path.suffix.lower() != ".toml":
        raise ConfigError([f"unsupported config file type {path.suffix or '(none)'!r}: use "
                           "parallel-agents.toml or config.json"], source)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"invalid TOML: {exc}"], source) from None


def _from_seed_json(section: Any, source: str) -> dict[str, Any]:
    """The seeds' `parallel_execution` section in our own shape."""
    if not isinstance(section, dict):
        raise ConfigError(["parallel_execution must be an object"], source)
    aliases = {"worker_pools": "pools", "pm_coordinator": "coordinator"}
    known = {"enabled", *aliases, *_SECTIONS}
    problems = [f"parallel_execution.{_unknown(k, known)}" for k in section if k not in known]
    if problems:
        raise ConfigError(problems, source)
    data: dict[str, Any] = {}
    for key, value in section.items():
        if key != "enabled":
            data[aliases.get(key, key)] = value
    if section.get("enabled") is False:
        # Parallel execution switched off: run one task at a time unless told otherwise.
        data.setdefault("defaults", {}).setdefault("strategy", "sequential")
    return data


def _unknown(key: str, known: set[str] | Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(known))}"
    return f"{key}: unknown key; {hint}"


def _coerce(value: Any, kind: type, where: str, problems: list[str]) -> Any:
    if value is None:
        return None
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError):
        problems.append(f"{where}: expected {kind.__name__}, got {value!r}")
        return None


def _check_value(key: str, value: Any, where: str, problems: list[str]) -> None:
    if value is None:
        return
    if key == "defaults.strategy" and value not in STRATEGIES:
        problems.append(f"{where}: unknown strategy {value!r}; use one of {', '.join(STRATEGIES)}")
    elif key in ("defaults.max_workers", "budget.max_tokens") and value < 1:
        problems.append(f"{where}: must be at least 1, got {value}")
    elif key == "budget.max_cost_usd" and not (0 < value < math.inf):  # (NaN fails too)
        problems.append(f"{where}: must be a finite number more than 0, got {value}")
    elif key == "defaults.model":
        try:
            check_model_spec(value)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")


def _parse_file_data(data: dict[str, Any], source: str) -> tuple[
        dict[str, Any], dict[str, Pool], dict[str, dict[str, Any]]]:
    problems: list[str] = []
    scalars: dict[str, Any] = {}
    pools: dict[str, Pool] = {}
    providers: dict[str, dict[str, Any]] = {}
    for section, body in data.items():
        if section not in _SECTIONS:
            problems.append(_unknown(section, set(_SECTIONS)))
            continue
        if not isinstance(body, dict):
            problems.append(f"{section}: must be a table/object of settings")
            continue
        if section in _SCALARS:
            spec = _SCALARS[section]
            for key, value in body.items():
                where = f"{section}.{key}"
                if key not in spec:
                    problems.append(f"{section}.{_unknown(key, spec)}")
                    continue
                value = _coerce(value, spec[key][0], where, problems)
                _check_value(where, value, where, problems)
                scalars[where] = value
        elif section == "pools":
            for name, raw in body.items():
                try:
                    pools[str(name)] = Pool.model_validate(raw or {})
                except ValidationError as exc:
                    for err in exc.errors():
                        loc = ".".join(str(p) for p in err["loc"])
                        if err["type"] == "extra_forbidden":
                            problems.append(f"pools.{name}.{_unknown(loc, Pool.model_fields)}")
                        else:
                            problems.append(f"pools.{name}.{loc}: {err['msg']} "
                                            f"(got {err.get('input')!r})")
        else:
            for name, raw in body.items():
                providers[str(name)] = _parse_provider(str(name), raw, problems)
    if problems:
        raise ConfigError(problems, source)
    return scalars, pools, providers


def _parse_provider(name: str, raw: Any, problems: list[str]) -> dict[str, Any]:
    where = f"providers.{name}"
    try:
        check_provider_name(name)
    except ValueError as exc:
        problems.append(f"{where}: {exc}")
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a table/object with base_url, api_key_env, rpm, tpm")
        return {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key.lower() in _SECRET_KEYS:
            # Never echo the value: it is probably a live key.
            problems.append(f"{where}.{key}: raw API keys are not accepted in a config file; "
                            f"put the key in an environment variable and set "
                            f"api_key_env = \"NAME_OF_THAT_VARIABLE\"")
            continue
        if key not in _PROVIDER_KEYS:
            problems.append(f"{where}.{_unknown(key, _PROVIDER_KEYS)}")
            continue
        value = _coerce(value, _PROVIDER_KEYS[key], f"{where}.{key}", problems)
        if value is None:
            continue
        if key == "api_key_env" and not _ENV_NAME.match(value):
            problems.append(f"{where}.api_key_env: must be the NAME of an environment variable "
                            f"(like OPENAI_API_KEY), and this value is not a variable name; if it "
                            f"is a key, remove it from the file and rotate it")
            continue
        problem = url_credentials_problem(value, "a config file") if key == "base_url" else None
        if problem is not None:
            problems.append(f"{where}.base_url: {problem}")
            continue
        if key in ("rpm", "tpm") and value < 1:
            problems.append(f"{where}.{key}: must be at least 1, got {value}")
            continue
        out[key] = value
    return out


def load_config(path: str | Path | None = None, *, env: Mapping[str, str] | None = None,
                cli: Mapping[str, Any] | None = None, cwd: Path | None = None) -> Config:
    """The effective config. `cli` holds dotted settings given as options, e.g.
    {"defaults.max_workers": 4}; None values mean "not given"."""
    env = os.environ if env is None else env
    file = Path(path) if path is not None else find_config_file(cwd, env)
    config = Config(file=file)
    for section, spec in _SCALARS.items():
        for key, (_, default) in spec.items():
            config.settings[f"{section}.{key}"] = Setting(default, "default")
    if file is not None:
        source = f"config file {file}"
        scalars, pools, providers = _parse_file_data(_read_file(file), str(file))
        for key, value in scalars.items():
            config.settings[key] = Setting(value, source)
        config.pools = {n: (p, source) for n, p in pools.items()}
        config.providers = {n: (p, source) for n, p in providers.items()}
    problems: list[str] = []
    for name, key in ENV_VARS.items():
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        section, short = key.split(".")
        value = _coerce(raw, _SCALARS[section][short][0], f"env {name}", problems)
        _check_value(key, value, f"env {name}", problems)
        config.settings[key] = Setting(value, f"env {name}")
    if problems:
        raise ConfigError(problems, "the environment")
    for key, (value, option) in _cli_items(cli):
        config.settings[key] = Setting(value, f"option {option}")
    return config


def _cli_items(cli: Mapping[str, Any] | None) -> list[tuple[str, tuple[Any, str]]]:
    out = []
    for key, value in (cli or {}).items():
        if value is None:
            continue
        option = "--" + key.split(".")[-1].replace("_", "-")
        out.append((key, (value, option)))
    return out


# -- applying to a plan ---------------------------------------------------------------------
def load_plan(path: str | Path, config: Config | None = None) -> Plan:
    """Load a plan file, adding the config's pools and providers the plan does not declare."""
    path = Path(path)
    if config is None or not (config.pools or config.providers) or \
            path.suffix.lower() not in (".yaml", ".yml", ".json"):
        return Plan.from_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return Plan.from_file(path)  # raises the plan loader's precise error
    data = parse_plan_text(text, fmt="json" if path.suffix.lower() == ".json" else "yaml",
                           source=str(path))
    if not isinstance(data, dict) or not all(data.get(k) is None or isinstance(data.get(k), dict)
                                             for k in ("pools", "providers")):
        return Plan.from_dict(data, source=str(path))
    pools = dict(data.get("pools") or {})
    for name, (pool, _) in config.pools.items():
        pools.setdefault(name, pool.model_dump())
    providers = dict(data.get("providers") or {})
    for name, settings in config.provider_settings().items():
        providers.setdefault(name, dict(settings))
    extra = {"providers": providers} if providers else {}
    return Plan.from_dict({**data, "pools": pools, **extra}, source=str(path))


def effective_run_options(config: Config, plan: Plan) -> dict[str, Any]:
    """strategy / max_workers / fail_fast for a run, with the plan beating the config file.

    Returns the values to hand to the executor (None = let the plan decide) and their
    sources, for display.
    """
    out: dict[str, Any] = {}
    for key, plan_value in (("strategy", plan.strategy), ("max_workers", plan.max_workers),
                            ("fail_fast", None)):
        setting = config.settings[f"defaults.{key}"]
        overrides_plan = setting.source.startswith(("option", "env"))
        if plan_value is not None and not overrides_plan:
            out[key] = Setting(plan_value, "plan")
        else:
            out[key] = setting
    return out

