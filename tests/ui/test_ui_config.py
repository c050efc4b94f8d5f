"""Config files (TOML and the seeds' config.json), precedence, sources, secrets."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from ui_helpers import cli_env, run_cli

TOML = """
[defaults]
strategy = "waves"
max_workers = 3
model = "local:small-model"

[pools.codegen]
max_concurrent = 5
timeout_sec = 60

[pools.database]
max_concurrent = 2

[providers.local]
base_url = "http://user@127.0.0.1:8080/v1"
api_key_env = "LOCAL_LLM_KEY"
rpm = 60

[budget]
max_cost_usd = 2.5
"""

SEED_JSON = {
    "gateway": {"port": 18789},  # another program's settings: left alone
    "parallel_execution": {
        "enabled": True,
        "worker_pools": {
            "codegen": {"max_concurrent": 3, "timeout_sec": 300, "max_retries": 2},
            "security": {"max_concurrent": 2, "timeout_sec": 300, "max_retries": 2},
            "database": {"max_concurrent": 2, "timeout_sec": 180, "max_retries": 2},
        },
        "pm_coordinator": {"decomposition_model": "big-model", "reasoning_effort": "high"},
    },
}

PLAN_WITHOUT_POOLS = """
name: uses-config-pools
tasks:
  - {id: a, pool: codegen, command: [python, -c, "import time; time.sleep(0.1)"]}
  - {id: b, pool: codegen, command: [python, -c, "import time; time.sleep(0.1)"]}
  - {id: c, pool: database, command: [python, -c, "import time; time.sleep(0.1)"]}
"""


def _show(cwd: Path, *args: str, **env: str) -> dict:
    proc = run_cli("config", "show", "--json", *args, cwd=cwd, env=cli_env(**env))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_toml_values_with_sources_and_precedence(tmp_path) -> None:
    (tmp_path / "parallel-agents.toml").write_text(TOML)
    shown = _show(tmp_path, PARALLEL_AGENTS_MAX_WORKERS="7", LOCAL_LLM_KEY="sk-live-123")
    s = shown["settings"]
    assert shown["config_file"].endswith("parallel-agents.toml")
    assert s["defaults.strategy"] == {"value": "waves",
                                      "source": f"config file {tmp_path / 'parallel-agents.toml'}"}
    assert s["defaults.max_workers"] == {"value": 7, "source": "env PARALLEL_AGENTS_MAX_WORKERS"}
    assert s["defaults.fail_fast"]["source"] == "default"
    assert s["pools.codegen.max_concurrent"]["value"] == 5
    assert s["pools.codegen.max_retries"]["source"] == "default"
    assert s["budget.max_cost_usd"]["value"] == 2.5
    # Secrets never shown: the key's variable is named, the URL's user info masked.
    assert s["providers.local.api_key_env"]["value"] == "LOCAL_LLM_KEY (set in the environment)"
    assert s["providers.local.base_url"]["value"] == "http://***@127.0.0.1:8080/v1"
    text = run_cli("config", "show", cwd=tmp_path,
                   env=cli_env(LOCAL_LLM_KEY="sk-live-123")).stdout
    assert "user@" not in text and "sk-live-123" not in text and "small-model" in text


def test_cli_beats_env_beats_plan_beats_config(tmp_path) -> None:
    (tmp_path / "parallel-agents.toml").write_text(TOML)
    plan = tmp_path / "p.yaml"
    plan.write_text(PLAN_WITHOUT_POOLS)

    def preview(*args: str, **env: str) -> dict:
        proc = run_cli("plan", str(plan), "--json", *args, cwd=tmp_path, env=cli_env(**env))
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    assert preview()["max_workers"] == 3 and preview()["strategy"] == "waves"  # config file
    assert preview(PARALLEL_AGENTS_MAX_WORKERS="2")["max_workers"] == 2  # env
    assert preview("--max-workers", "1", PARALLEL_AGENTS_MAX_WORKERS="2")["max_workers"] == 1
    plan.write_text("max_workers: 4\nstrategy: dependency\n" + PLAN_WITHOUT_POOLS)
    assert preview()["max_workers"] == 4 and preview()["strategy"] == "dependency"  # plan
    assert preview(PARALLEL_AGENTS_STRATEGY="sequential")["strategy"] == "sequential"


def test_seed_config_json_pools_apply_to_plans_that_do_not_declare_them(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(SEED_JSON))
    shown = _show(tmp_path)["settings"]
    assert shown["pools.security.max_concurrent"]["value"] == 2
    assert shown["coordinator.decomposition_model"]["value"] == "big-model"
    plan = tmp_path / "p.yaml"
    plan.write_text(PLAN_WITHOUT_POOLS)
    proc = run_cli("plan", str(plan), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    pools = json.loads(proc.stdout)["pools"]
    assert pools["codegen"]["max_concurrent"] == 3 and pools["database"]["timeout_sec"] == 180
    # The plan's own pool of the same name wins over the config's.
    plan.write_text("pools:\n  codegen: {max_concurrent: 1}\n" + PLAN_WITHOUT_POOLS)
    pools = json.loads(run_cli("plan", str(plan), "--json", cwd=tmp_path).stdout)["pools"]
    assert pools["codegen"]["max_concurrent"] == 1 and pools["database"]["max_concurrent"] == 2
    # Without the config the plan is invalid: its pools are unknown.
    proc = run_cli("plan", str(plan), "--json", cwd=tmp_path.parent)
    assert proc.returncode == 2 and "unknown pool 'database'" in proc.stderr


def test_run_uses_config_defaults(tmp_path) -> None:
    seed = json.loads(json.dumps(SEED_JSON))
    seed["parallel_execution"]["enabled"] = False  # parallel off: one task at a time
    (tmp_path / "config.json").write_text(json.dumps(seed))
    plan = tmp_path / "p.yaml"
    plan.write_text(PLAN_WITHOUT_POOLS)
    proc = run_cli("run", str(plan), "--json", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["strategy"] == "sequential" and record["max_parallel"] == 1
    assert record["plan"]["pools"]["codegen"]["max_concurrent"] == 3
    proc = run_cli("run", str(plan), "--json", "--quiet", "--strategy", "dependency",
                   cwd=tmp_path)
    assert json.loads(proc.stdout)["max_parallel"] == 3


def test_unknown_keys_get_suggestions_and_raw_keys_are_refused(tmp_path) -> None:
    bad = tmp_path / "parallel-agents.toml"
    bad.write_text(textwrap.dedent("""
        [defaults]
        max_worker = 3
        [pool.x]
        [pools.codegen]
        max_concurent = 2
        [providers.openai]
        api_key = "sk-live-abcdef"
        base_url = "https://u:hunter2@example.com/v1?x=1&token=hunter3"
        [providers.anthropic]
        api_key_env = "sk-live-ghijkl"
    """))
    proc = run_cli("config", "show", cwd=tmp_path)
    assert proc.returncode == 2
    err = proc.stderr
    assert "invalid config in" in err and "6 problems" in err
    assert "defaults.max_worker: unknown key; did you mean 'max_workers'?" in err
    assert "pool: unknown key; did you mean 'pools'?" in err
    assert "pools.codegen.max_concurent: unknown key; did you mean 'max_concurrent'?" in err
    assert "providers.openai.api_key: raw API keys are not accepted" in err
    assert "providers.anthropic.api_key_env: must be the NAME of an environment variable" in err
    assert ("providers.openai.base_url: refusing to store a secret in a config file: base_url "
            "carries a password (user:PASSWORD@) and the query parameter 'token'") in err
    assert "OPENAI_BASE_URL" in err
    assert "sk-live" not in err and "hunter" not in err and "Traceback" not in err
    # The same checks guard `run`, before anything starts.
    plan = tmp_path / "p.yaml"
    plan.write_text(PLAN_WITHOUT_POOLS)
    proc = run_cli("run", str(plan), cwd=tmp_path)
    assert proc.returncode == 2 and "did you mean 'max_workers'" in proc.stderr


def test_bad_environment_and_seed_section_errors(tmp_path) -> None:
    proc = run_cli("config", "show", cwd=tmp_path,
                   env=cli_env(PARALLEL_AGENTS_MAX_WORKERS="lots"))
    assert proc.returncode == 2
    assert "env PARALLEL_AGENTS_MAX_WORKERS: expected int, got 'lots'" in proc.stderr
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"parallel_execution": {"worker_pool": {}}}))
    proc = run_cli("config", "show", cwd=tmp_path)
    assert proc.returncode == 2
    assert ("parallel_execution.worker_pool: unknown key; did you mean 'worker_pools'?"
            in proc.stderr)
    proc = run_cli("config", "show", "--config", str(tmp_path / "missing.toml"), cwd=tmp_path)
    assert proc.returncode == 2 and "no such config file" in proc.stderr


@pytest.fixture
def configured_server(tmp_path):  # noqa: ANN201 - the fake server the config file points at
    """A loopback OpenAI-compatible server, named in tmp_path's config file with the default
    model `openai:configured-model`."""
    from tests.fakes.openai_server import FakeLLMServer, Reply

    with FakeLLMServer() as srv:
        srv.default = Reply.text("configured answer")
        (tmp_path / "parallel-agents.toml").write_text(srv.config_toml("configured-model"))
        yield srv


def _chat_models(srv) -> list[str]:  # noqa: ANN001
    return [r.body["model"] for r in srv.requests if r.path.endswith("/chat/completions")]


def test_run_uses_the_config_files_model_and_provider(tmp_path, configured_server) -> None:
    """`defaults.model` and `[providers.*]` in the config file reach the run: an LLM task that
    names no model asks the configured server for the configured model."""
    srv = configured_server
    plan = tmp_path / "p.yaml"
    plan.write_text("name: llm\ntasks:\n  - {id: a, prompt: Say hello., max_iterations: 1}\n")
    proc = run_cli("run", str(plan), "--json", "--quiet", "--no-store", cwd=tmp_path,
                   env=cli_env(FAKE_LLM_KEY="sk-fake-key-for-tests"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tasks"]["a"]["output"] == "configured answer"
    models = _chat_models(srv)
    assert models and set(models) == {"configured-model"}
    assert "sk-fake-key-for-tests" in (srv.requests[0].auth or "")
    # The environment still beats the file.
    proc = run_cli("run", str(plan), "--json", "--quiet", "--no-store", cwd=tmp_path,
                   env=cli_env(FAKE_LLM_KEY="sk-fake-key-for-tests",
                               PARALLEL_AGENTS_MODEL="openai:env-model"))
    assert proc.returncode == 0, proc.stderr
    assert _chat_models(srv)[-1] == "env-model"


def test_a_request_uses_the_config_files_model_and_provider(tmp_path, configured_server) -> None:
    """The same for a request in words: its agents' LLM calls go to the configured server."""
    proc = run_cli("run", "write a haiku about tea", "--json", "--quiet", "--no-store",
                   cwd=tmp_path, env=cli_env(FAKE_LLM_KEY="sk-fake-key-for-tests",
                                             PARALLEL_AGENTS_PLANNER="keywords"))
    assert proc.returncode == 0, proc.stderr
    models = _chat_models(configured_server)
    assert models and set(models) == {"configured-model"}


def test_an_unknown_provider_in_the_config_file_is_named(tmp_path) -> None:
    (tmp_path / "parallel-agents.toml").write_text('[providers.openia]\nrpm = 10\n')
    proc = run_cli("config", "show", cwd=tmp_path, env=cli_env())
    assert proc.returncode == 2
    assert "providers.openia: unknown provider 'openia': did you mean 'openai'?" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_plan_with_credentials_in_a_provider_url_is_refused(tmp_path) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(textwrap.dedent("""
        providers:
          openai: {base_url: "http://u:cred-pass-777@127.0.0.1:9/v1"}
        tasks:
          - {id: a, prompt: hi, model: "openai:gpt-4o-mini"}
    """))
    for command in ("plan", "run"):
        proc = run_cli(command, str(plan), cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "providers.openai.base_url: refusing to store a secret in a plan" in proc.stderr
        assert "OPENAI_BASE_URL" in proc.stderr
        assert "cred-pass-777" not in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
