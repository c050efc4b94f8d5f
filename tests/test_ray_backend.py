"""The Ray backend, on a real local Ray instance shared by this module.

Ray takes seconds to start, so one instance (no dashboard, no usage stats, 2 CPUs, loopback)
serves every test here; each test's executor brings its own pool actors and kills them on close.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import tempfile
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import ray

import parallel_agents as pa
from parallel_agents.backends.ray import RayBackend

TESTS_DIR = str(Path(__file__).resolve().parent)
REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Workers import this module to unpickle its functions, so it must be on their path.
    path = os.pathsep.join(p for p in (TESTS_DIR, os.environ.get("PYTHONPATH")) if p)
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
             log_to_driver=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"PYTHONPATH": path, "RAY_USAGE_STATS_ENABLED": "0"}})
    yield
    ray.shutdown()


def run_plan(plan: pa.Plan, backend: str, events: list[pa.Event] | None = None,
             **options: Any) -> pa.RunResult:
    async def go() -> pa.RunResult:
        async with pa.Executor(backend=backend, seed=1, **options) as executor:
            if events is not None:
                executor.subscribe(events.append)
            return await executor.execute(plan)

    return asyncio.run(go())


# -- functions the plans run (module level: workers import them by reference) ---------------
def double_input(ctx: pa.TaskContext) -> int:
    ctx.progress("doubling", 0.5)
    return int(ctx.inputs["count"]) * 2


async def async_greeting(ctx: pa.TaskContext) -> dict[str, Any]:
    await asyncio.sleep(0.01)
    return {"greeting": f"hello {ctx.inputs['name']}", "attempt": ctx.attempt}


def refuse() -> None:
    raise pa.NonRetryableError("bad request: refusing on purpose")


def with_usage() -> pa.TaskOutput:
    return pa.TaskOutput(output="priced", usage={"tokens": 12}, cost_usd=0.25)


def flaky(ctx: pa.TaskContext) -> str:
    if ctx.attempt == 1:
        raise pa.TaskError("transient: try again")
    return f"ok on attempt {ctx.attempt}"


def my_pid() -> int:
    return os.getpid()


def report_pid_then_hang(ctx: pa.TaskContext) -> str:
    if ctx.attempt == 1:
        Path(ctx.task.env["PID_FILE"]).write_text(str(os.getpid()))
        time.sleep(60)
        return "should have been killed"
    return f"survived, attempt {ctx.attempt}"


async def async_default_model() -> str:
    from parallel_agents.roles import default_model
    return default_model()


def sync_default_model() -> str:
    from parallel_agents.roles import default_model
    return default_model()


def mixed_plan() -> pa.Plan:
    py = sys.executable
    return pa.Plan(
        name="mixed",
        pools={"cmd": pa.Pool(max_concurrent=2), "fn": pa.Pool(max_concurrent=3, max_retries=1,
                                                                retry_backoff_sec=0)},
        tasks=[
            pa.Task(id="count", pool="cmd", command=[py, "-c", "print(21)"]),
            pa.Task(id="name", pool="cmd", command=[
                py, "-c", "import json,sys; d=json.load(sys.stdin); print('ray-' + d['task']['id'])"]),
            pa.Task(id="double", pool="fn", run=double_input, depends_on=["count"]),
            pa.Task(id="greet", pool="fn", run=async_greeting, depends_on=["name"]),
            pa.Task(id="broken", pool="cmd", command=[
                py, "-c", "import sys; sys.stderr.write('boom'); sys.exit(4)"]),
            pa.Task(id="after-broken", pool="fn", run=my_pid, depends_on=["broken"]),
            pa.Task(id="refuse", pool="fn", run=refuse),
            pa.Task(id="usage", pool="fn", run=with_usage),
            pa.Task(id="flaky", pool="fn", run=flaky),
        ],
    )


def outcome(result: pa.RunResult) -> dict[str, tuple[Any, ...]]:
    return {tid: (t.status, t.output, t.error, t.attempts, t.usage, t.cost_usd)
            for tid, t in result.tasks.items()}


def test_same_statuses_and_outputs_on_both_backends() -> None:
    plan = mixed_plan()
    local = run_plan(plan, "local")
    events: list[pa.Event] = []
    remote = run_plan(plan, "ray", events)

    assert remote.status == local.status == "partial"
    assert outcome(remote) == outcome(local)
    got = outcome(remote)
    assert got["count"][:2] == ("succeeded", "21")
    assert got["double"][:2] == ("succeeded", 42)
    assert got["greet"][1] == {"greeting": "hello ray-name", "attempt": 1}
    assert got["broken"][:3] == ("failed", None, "exit code 4: boom")
    assert got["after-broken"][0] == "skipped"
    assert got["refuse"][0] == "failed" and got["refuse"][3] == 1  # non-retryable survives Ray
    assert got["usage"][1:] == ("priced", None, 1, {"tokens": 12}, 0.25)
    assert got["flaky"][:4] == ("succeeded", "ok on attempt 2", None, 2)
    # Progress made on the worker arrives as a driver-side event.
    progress = [e for e in events if e.kind == "task_progress"]
    assert [(e.task_id, e.message, e.data) for e in progress] == [
        ("double", "doubling", {"fraction": 0.5})]


def test_tasks_run_in_ray_worker_processes() -> None:
    plan = pa.Plan(pools={"default": pa.Pool(max_concurrent=2)}, tasks=[
        pa.Task(id="fn", run=my_pid),
        pa.Task(id="cmd", command=[sys.executable, "-c", "import os; print(os.getppid())"]),
    ])
    backend = RayBackend()

    async def go() -> tuple[pa.RunResult, list[int]]:
        async with pa.Executor(backend=backend) as executor:
            result = await executor.execute(plan)
            return result, await backend.worker_pids("default")

    result, workers = asyncio.run(go())
    assert result.status == "succeeded"
    assert result.tasks["fn"].output != os.getpid()
    assert result.tasks["fn"].output in workers
    # A command's parent is the Ray worker that ran it, not this process.
    assert int(result.tasks["cmd"].output) in workers


def test_killed_worker_fails_the_attempt_and_our_retry_completes_the_run(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    plan = pa.Plan(
        pools={"victim": pa.Pool(max_concurrent=1), "other": pa.Pool(max_concurrent=1)},
        tasks=[
            pa.Task(id="victim", pool="victim", run=report_pid_then_hang, max_retries=2,
                    retry_backoff_sec=0.1, env={"PID_FILE": str(pid_file)}),
            pa.Task(id="bystander", pool="other", run=my_pid),
            pa.Task(id="after", pool="other", run=my_pid, depends_on=["victim"]),
        ],
    )

    def killer() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if pid_file.exists() and pid_file.read_text():
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    result = run_plan(plan, "ray")
    thread.join(5)

    assert result.status == "succeeded", {t: (r.status, r.history) for t, r in result.tasks.items()}
    victim = result.tasks["victim"]
    assert victim.output == "survived, attempt 2"
    assert victim.attempts == 2
    assert victim.history[0].outcome == "failed"
    assert victim.history[0].error.startswith("worker lost: ")
    assert result.tasks["after"].status == "succeeded"


def test_workers_use_the_runs_default_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """LLM tasks naming no model run on the run's default model on the workers too, not on
    whatever the worker processes' environment says (they started before this was set)."""
    monkeypatch.setenv("PARALLEL_AGENTS_MODEL", "scripted:the-drivers-model")
    plan = pa.Plan(tasks=[pa.Task(id="a", run=async_default_model),
                          pa.Task(id="s", run=sync_default_model)])
    result = run_plan(plan, "ray")
    assert {t: r.output for t, r in result.tasks.items()} == {
        "a": "scripted:the-drivers-model", "s": "scripted:the-drivers-model"}


def test_unpicklable_function_fails_once_with_a_clear_error() -> None:
    lock = threading.Lock()

    def uses_lock() -> str:  # a closure: cloudpickle ships it by value, lock included
        with lock:
            return "never"

    plan = pa.Plan(tasks=[pa.Task(id="locked", run=uses_lock, max_retries=3)])
    result = run_plan(plan, "ray")
    task = result.tasks["locked"]
    assert task.status == "failed"
    assert task.attempts == 1  # not retried: it can never work
    assert task.error.startswith(
        "task 'locked' cannot be sent to a Ray worker: TypeError: cannot pickle '_thread.lock'")
    assert "picklable by cloudpickle" in task.error


def test_function_the_workers_cannot_import_fails_once_naming_the_task(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "driver_only_helpers.py").write_text("def answer():\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # the driver can import it; the workers cannot
    import driver_only_helpers

    plan = pa.Plan(tasks=[pa.Task(id="elsewhere", run=driver_only_helpers.answer, max_retries=3)])
    assert run_plan(plan, "local").tasks["elsewhere"].output == 42
    task = run_plan(plan, "ray").tasks["elsewhere"]
    assert task.status == "failed" and task.attempts == 1
    assert task.error.startswith("the Ray worker cannot load task 'elsewhere': ModuleNotFoundError: "
                                 "No module named 'driver_only_helpers'")


def test_timeout_cancels_the_ray_task_and_kills_the_command_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    script = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(60)\n"
    )
    plan = pa.Plan(tasks=[pa.Task(id="slow", command=[sys.executable, "-c", script],
                                  timeout_sec=3)])
    result = run_plan(plan, "ray")
    assert result.tasks["slow"].status == "failed"
    assert result.tasks["slow"].error == "timed out after 3s (timeout_sec=3)"
    pids = [int(p) for p in pid_file.read_text().split()]
    deadline = time.monotonic() + 20  # the worker terminates the group after the cancel lands
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), f"processes left behind: {pids}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent just has not reaped it yet).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def _cli(*args: str, block_ray: bool = False, **env_vars: str) -> subprocess.CompletedProcess[str]:
    prelude = "import sys\n"
    if block_ray:
        prelude += "sys.modules['ray'] = None  # as if Ray were not installed\n"
    code = prelude + "from parallel_agents.cli import main\nsys.argv[0] = 'parallel-agents'\nmain()\n"
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", **env_vars)
    # Runs from the repo root: keep the run store out of the checkout.
    env.setdefault("PARALLEL_AGENTS_STORE", str(_SCRATCH / "runs.db"))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=REPO)


_SCRATCH = Path(tempfile.mkdtemp(prefix="pa-ray-cli-"))


def _write_plan(tmp_path: Path) -> Path:
    plan = {
        "name": "cli",
        "pools": {"default": {"max_concurrent": 2}},
        "tasks": [
            {"id": "a", "command": ["python", "-c", "print('from a')"]},
            {"id": "b", "depends_on": ["a"], "command": [
                "python", "-c", "import json,sys; print(json.load(sys.stdin)['inputs']['a'] + '!')"]},
        ],
    }
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    return path


def test_cli_backend_ray_without_ray_installed_says_how_to_install(tmp_path: Path) -> None:
    proc = _cli("run", str(_write_plan(tmp_path)), "--backend", "ray", block_ray=True)
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'parallel-agents[ray]'" in proc.stderr
    assert "pip install -e '.[ray]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_rejects_bad_backend_options(tmp_path: Path) -> None:
    plan = str(_write_plan(tmp_path))
    proc = _cli("run", plan, "--backend", "spark")
    assert proc.returncode == 2 and "unknown backend 'spark': use one of local, ray" in proc.stderr
    proc = _cli("run", plan, "--ray-address", "127.0.0.1:6379")
    assert proc.returncode == 2 and "--ray-address needs --backend ray" in proc.stderr


def test_cli_runs_a_plan_on_its_own_local_ray(tmp_path: Path) -> None:
    proc = _cli("run", str(_write_plan(tmp_path)), "--backend", "ray", "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # stdout is only the JSON, no Ray chatter
    assert result["status"] == "succeeded"
    assert result["tasks"]["b"]["output"] == "from a!"


def test_cli_joins_a_running_cluster_with_ray_address(tmp_path: Path) -> None:
    address = ray.get_runtime_context().gcs_address  # this module's instance, as a "cluster"
    # Recent Ray enables token auth; a second driver on the machine reads ~/.ray/auth_token.
    auth = os.environ.get("RAY_AUTH_MODE", "token")
    proc = _cli("run", str(_write_plan(tmp_path)), "--backend", "ray", "--ray-address", address,
                "--json", "--quiet", RAY_AUTH_MODE=auth)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tasks"]["b"]["output"] == "from a!"
    # The CLI only disconnected: the cluster it joined is still up and usable.
    assert ray.get(ray.put("still here")) == "still here"


def test_cli_unreachable_ray_address_fails_fast(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port on loopback that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    proc = _cli("run", str(_write_plan(tmp_path)), "--backend", "ray",
                "--ray-address", f"127.0.0.1:{port}")
    assert proc.returncode == 2
    assert f"cannot reach the Ray cluster at '127.0.0.1:{port}'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 60  # not Ray's minutes of reconnecting


def test_resume_runs_where_the_run_ran_unless_told_otherwise(tmp_path: Path) -> None:
    """A run's backend and Ray address are stored with it: `resume` goes back to that
    cluster (here unreachable, so it says so), `resume --backend local` finishes it here."""
    import sqlite3

    with socket.socket() as probe:  # a port on loopback that nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    store = tmp_path / "runs.db"
    ran = _cli("run", str(_write_plan(tmp_path)), "--json", "-q",
               PARALLEL_AGENTS_STORE=str(store))
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(ran.stdout)["run_id"]
    # As if it had run on that cluster (and been interrupted).
    with sqlite3.connect(store) as conn:
        options = json.loads(conn.execute("SELECT options_json FROM runs").fetchone()[0])
        assert options["backend"] == "local" and options["ray_address"] is None
        options.update(backend="ray", ray_address=address)
        conn.execute("UPDATE runs SET options_json = ?, status = 'running'",
                     (json.dumps(options),))
    for args in ((), ("--backend", "ray")):
        back = _cli("resume", run_id, "-q", *args, PARALLEL_AGENTS_STORE=str(store))
        assert back.returncode == 2, back.stderr
        assert f"cannot reach the Ray cluster at '{address}'" in back.stderr
    here = _cli("resume", run_id, "--json", "-q", "--backend", "local",
                PARALLEL_AGENTS_STORE=str(store))
    assert here.returncode == 0, here.stderr
    assert json.loads(here.stdout)["status"] == "succeeded"
