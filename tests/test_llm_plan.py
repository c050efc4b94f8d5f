"""LLM fields of plans: kinds, roles, providers, prices, budgets, and their located errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import parallel_agents as pa
from parallel_agents.roles import BUILTIN_ROLES, DEFAULT_MODEL, llm_settings


def problems(data: dict) -> list[str]:
    with pytest.raises(pa.PlanError) as info:
        pa.Plan.from_dict(data)
    return [str(p) for p in info.value.problems]


def test_agent_or_prompt_makes_an_llm_task_and_description_is_the_prompt() -> None:
    plan = pa.Plan.from_dict({"tasks": [
        {"id": "a", "agent": "backend", "prompt": "Build the API"},
        {"id": "b", "agent": "docs", "description": "Document the API"},
        {"id": "c", "prompt": "Say hi"},
        {"id": "d", "command": ["true"]},
    ]})
    assert [t.kind for t in plan.tasks] == ["llm", "llm", "llm", "command"]
    settings = llm_settings(plan.task("b"), plan)
    assert settings.system_prompt == BUILTIN_ROLES["docs"].system_prompt
    assert settings.max_iterations == 10
    assert settings.model == DEFAULT_MODEL


def test_every_required_role_is_built_in() -> None:
    for name in ("architect", "frontend", "backend", "database", "security", "qa", "docs",
                 "researcher", "writer", "codegen"):
        assert name in BUILTIN_ROLES


def test_exactly_one_thing_to_run() -> None:
    found = problems({"tasks": [
        {"id": "a", "command": "true", "agent": "backend", "prompt": "x"},
        {"id": "b", "agent": "backend"},
        {"id": "c"},
    ]})
    assert any("tasks[0] (a)" in p and "not command and agent/prompt" in p for p in found)
    assert any("tasks[1] (b)" in p and "needs a prompt" in p for p in found)
    assert any("tasks[2] (c)" in p and "nothing to run" in p for p in found)


def test_unknown_role_suggests_the_close_one_and_bad_model_is_located() -> None:
    found = problems({"tasks": [
        {"id": "a", "agent": "bakend", "prompt": "x"},
        {"id": "b", "agent": "qa", "prompt": "x", "model": "gpt-4o"},
        {"id": "c", "agent": "qa", "prompt": "x", "max_iterations": 0},
    ]})
    assert any(p.startswith("tasks[0] (a).agent") and "did you mean 'backend'" in p
               for p in found)
    assert any(p.startswith("tasks[1] (b).model") and "PROVIDER:MODEL" in p for p in found)
    assert any(p.startswith("tasks[2] (c).max_iterations") for p in found)


def test_api_key_in_a_plan_is_refused_without_echoing_it() -> None:
    secret = "sk-live-THISISASECRET0123456789"
    found = problems({
        "providers": {"openai": {"api_key": secret, "rpm": 60},
                      "anthropic": {"api_key_env": secret}},
        "tasks": [{"id": "a", "prompt": "x"}],
    })
    text = "\n".join(found)
    assert secret not in text
    assert "providers.openai" in text and "refusing to store a secret" in text
    assert "api_key_env" in text and "NAME of an environment variable" in text


def test_unknown_provider_name_in_plan_providers() -> None:
    found = problems({"providers": {"opnai": {"base_url": "http://127.0.0.1:1/v1"}},
                      "tasks": [{"id": "a", "prompt": "x"}]})
    assert any("providers" in p and "did you mean 'openai'" in p for p in found)


def test_plan_roles_add_and_override_and_set_the_pool() -> None:
    plan = pa.Plan.from_dict({
        "pools": {"reviewers": {"max_concurrent": 2}},
        "roles": {
            "reviewer": {"system_prompt": "You review code.", "pool": "reviewers",
                         "model": "openai:gpt-4o-mini", "max_tokens": 99},
            "backend": {"system_prompt": "Custom backend."},
        },
        "tasks": [
            {"id": "r", "agent": "reviewer", "prompt": "review"},
            {"id": "r2", "agent": "reviewer", "prompt": "review", "pool": "default",
             "max_tokens": 7},
            {"id": "b", "agent": "backend", "prompt": "build"},
        ],
    })
    assert plan.task("r").pool == "reviewers"
    assert plan.task("r2").pool == "default"  # the task's own pool wins
    s = llm_settings(plan.task("r"), plan)
    assert (s.model, s.max_tokens, s.system_prompt) == ("openai:gpt-4o-mini", 99,
                                                         "You review code.")
    assert llm_settings(plan.task("r2"), plan).max_tokens == 7
    assert llm_settings(plan.task("b"), plan).system_prompt == "Custom backend."


def test_role_pool_must_be_declared() -> None:
    found = problems({"roles": {"x": {"system_prompt": "s", "pool": "nowhere"}},
                      "tasks": [{"id": "a", "agent": "x", "prompt": "p"}]})
    assert any(p.startswith("roles.x.pool") and "unknown pool 'nowhere'" in p for p in found)


def test_roles_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    roles = tmp_path / "roles.yaml"
    roles.write_text("translator:\n  system_prompt: You translate.\n  max_iterations: 2\n")
    monkeypatch.setenv("PARALLEL_AGENTS_ROLES", str(roles))
    plan = pa.Plan.from_dict({"tasks": [{"id": "t", "agent": "translator", "prompt": "hola"}]})
    assert llm_settings(plan.task("t"), plan).max_iterations == 2


def test_prices_and_budget_validate() -> None:
    found = problems({"budget_usd": -1, "prices": {"m": {"input_per_mtok": 1}},
                      "tasks": [{"id": "a", "prompt": "x"}]})
    assert any(p.startswith("budget_usd") for p in found)
    assert any(p.startswith("prices.m.output_per_mtok") for p in found)


def test_python_tasks_take_tools_and_describe_skips_them() -> None:
    @pa.tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    task = pa.Task(id="t", prompt="add 2 and 3", tools=[add])
    assert task.kind == "llm"
    assert "tools" not in task.describe()
    json.dumps(task.describe())


def test_cli_rejects_a_secret_in_the_plan_without_printing_it(tmp_path: Path) -> None:
    secret = "sk-proj-VERYSECRETVALUE987654321"
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"providers:\n  openai:\n    api_key: {secret}\n"
                    "tasks:\n  - id: a\n    agent: backend\n    prompt: hi\n")
    proc = subprocess.run([sys.executable, "-m", "parallel_agents", "run", str(plan)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "refusing to store a secret" in proc.stderr
    assert secret not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_a_key_refused_in_a_plan_built_in_python_is_not_echoed() -> None:
    """pydantic's errors show the input they refuse: the plan's models hide it, since what a
    plan refuses may be a key put where it does not belong."""
    import pydantic

    for providers in ({"openai": {"api_key": "sk-test-SECRET999"}},
                      {"openai": {"api_key_env": "sk-test-SECRET999"}}):
        with pytest.raises(pydantic.ValidationError) as info:
            pa.Plan(providers=providers, tasks=[pa.Task(id="a", prompt="x")])
        assert "SECRET999" not in str(info.value)
    with pytest.raises(pydantic.ValidationError) as info:
        pa.Task(id="a", command=["x"], env={"KEY": ["sk-test-SECRET999"]})
    assert "SECRET999" not in str(info.value)


def test_a_plan_file_never_shows_a_refused_text_value() -> None:
    """The loader's messages name a refused value's kind, not the value: a text or mapping
    in the wrong field may be a key (the server only masks the secrets it knows)."""
    secret = "sk-proj-SECRET0123456789"
    for data in ({"name": [secret], "tasks": [{"id": "a", "command": ["x"]}]},
                 {"tasks": [{"id": "a", "command": ["x"], "timeout_sec": secret}]},
                 {"providers": {"openai": {"api_key_env": {"value": secret}}},
                  "tasks": [{"id": "a", "prompt": "x"}]}):
        with pytest.raises(pa.PlanError) as info:
            pa.Plan.from_dict(data, source="plan.yaml")
        assert "SECRET" not in str(info.value), str(info.value)
    with pytest.raises(pa.PlanError, match=r"got -5"):  # a number is shown as it is
        pa.Plan.from_dict({"tasks": [{"id": "a", "command": ["x"], "timeout_sec": -5}]})
