"""`parallel-agents run` through real subprocesses running real command tasks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(120)

CONTRACT_KEYS = {"run_id", "status", "makespan_seconds", "serial_seconds",
                 "critical_path_seconds", "speedup", "tasks"}
TASK_KEYS = {"status", "attempts", "started_at", "finished_at", "output", "error"}

FLAKY = """
import sys
from pathlib import Path
counter = Path(sys.argv[1])
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
if n <= 2:
    print(f"transient failure {n}", file=sys.stderr)
    sys.exit(1)
print(f"ok after {n} attempts")
"""

# Starts a child `sleep` in its own process group, records both pids, then hangs.
SPAWNER = """
import os, subprocess, sys, time
child = subprocess.Popen(["sleep", "120"])
with open(sys.argv[1], "a") as f:
    f.write(f"{os.getpid()} {child.pid}\\n")
time.sleep(120)
"""

ECHO_INPUTS = """
import json, os, sys
payload = json.load(sys.stdin)
print(json.dumps({"inputs": payload["inputs"], "task": payload["task"]["id"],
                  "env": [os.environ["PARALLEL_AGENTS_TASK_ID"],
                          os.environ["PARALLEL_AGENTS_ATTEMPT"],
                          bool(os.environ["PARALLEL_AGENTS_RUN_ID"])],
                  "custom": os.environ.get("GREETING")}))
"""


def cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parallel_agents", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "COLUMNS": "120"},
    )


def write_plan(tmp: Path, data: dict[str, Any], name: str = "plan.json") -> Path:
    path = tmp / name
    path.write_text(json.dumps(data))
    return path


def script(tmp: Path, name: str, body: str) -> str:
    path = tmp / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def one_json_object(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"stdout is not exactly one JSON line: {stdout!r}"
    data = json.loads(lines[0])
    assert isinstance(data, dict)
    assert CONTRACT_KEYS <= data.keys()
    for task in data["tasks"].values():
        assert TASK_KEYS <= task.keys()
    return data


def alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (a reaped-later corpse is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def recorded_pids(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(p) for line in path.read_text().splitlines() for p in line.split()]


def wait_gone(pids: list[int], seconds: float = 10) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


@pytest.fixture
def cleanup_pids():
    """Kill anything a failing test left behind, so one failure does not leak processes."""
    files: list[Path] = []
    yield files
    for f in files:
        for pid in recorded_pids(f):
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def test_flaky_command_retried_to_success_with_inputs_and_env(tmp_path: Path) -> None:
    flaky = script(tmp_path, "flaky.py", FLAKY)
    echo = script(tmp_path, "echo_inputs.py", ECHO_INPUTS)
    plan = write_plan(tmp_path, {
        "name": "flaky",
        "pools": {"default": {"max_concurrent": 2, "max_retries": 2,
                              "retry_backoff_sec": 0.05}},
        "tasks": [
            {"id": "flaky", "command": ["python", flaky, str(tmp_path / "count")]},
            {"id": "report", "depends_on": ["flaky"], "command": ["python", echo],
             "env": {"GREETING": "hi"}},
        ],
    })
    proc = cli("run", str(plan), "--json", "--seed", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = one_json_object(proc.stdout)
    assert data["status"] == "succeeded"
    flaky_result = data["tasks"]["flaky"]
    assert flaky_result["attempts"] == 3
    assert flaky_result["output"] == "ok after 3 attempts"
    assert flaky_result["error"] is None
    assert "transient failure 1" in flaky_result["history"][0]["error"]
    assert "exit code 1" in flaky_result["history"][0]["error"]
    report = json.loads(data["tasks"]["report"]["output"])
    assert report == {"inputs": {"flaky": "ok after 3 attempts"}, "task": "report",
                      "env": ["report", "1", True], "custom": "hi"}
    assert (tmp_path / "count").read_text() == "3"
    # Human progress goes to stderr.
    assert "retry" in proc.stderr and "succeeded" in proc.stderr


def test_timeout_leaves_no_process_behind(tmp_path: Path, cleanup_pids: list[Path]) -> None:
    spawner = script(tmp_path, "spawner.py", SPAWNER)
    pids_file = tmp_path / "pids"
    cleanup_pids.append(pids_file)
    plan = write_plan(tmp_path, {"tasks": [
        # Generous: the attempt must start python and record its pids before the timeout.
        {"id": "hang", "timeout_sec": 2.5, "max_retries": 1, "retry_backoff_sec": 0,
         "command": ["python", spawner, str(pids_file)]},
    ]})
    started = time.monotonic()
    proc = cli("run", str(plan), "--json", cwd=tmp_path)
    assert time.monotonic() - started < 40
    assert proc.returncode == 1, proc.stderr
    data = one_json_object(proc.stdout)
    hang = data["tasks"]["hang"]
    assert data["status"] == "failed"
    assert hang["status"] == "failed" and hang["attempts"] == 2
    assert "timed out after 2.5s" in hang["error"]
    pids = recorded_pids(pids_file)
    assert len(pids) == 4  # two attempts, each a python and its sleep child
    assert wait_gone(pids) == [], "processes left behind after the timeout"


def test_failed_dependency_skips_dependents_exit_1(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, {"tasks": [
        {"id": "bad", "command": ["python", "-c", "import sys; print('oops', file=sys.stderr); "
                                  "sys.exit(3)"]},
        {"id": "child", "depends_on": ["bad"], "command": ["python", "-c", "print(1)"]},
        {"id": "grandchild", "depends_on": ["child"], "command": ["python", "-c", "print(1)"]},
        {"id": "free", "command": ["python", "-c", "print('independent')"]},
    ]})
    proc = cli("run", str(plan), "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    data = one_json_object(proc.stdout)
    assert data["status"] == "partial"
    tasks = data["tasks"]
    assert tasks["bad"]["status"] == "failed"
    assert tasks["bad"]["error"] == "exit code 3: oops"
    assert tasks["child"]["status"] == "skipped"
    assert tasks["child"]["error"] == "dependency 'bad' failed"
    assert tasks["child"]["attempts"] == 0 and tasks["child"]["started_at"] is None
    assert tasks["grandchild"]["status"] == "skipped"
    assert "bad" in tasks["grandchild"]["error"]
    assert tasks["free"]["status"] == "succeeded" and tasks["free"]["output"] == "independent"
    assert isinstance(tasks["free"]["started_at"], float)
    assert tasks["free"]["finished_at"] >= tasks["free"]["started_at"] > 1.6e9


def test_missing_program_is_a_clean_failure(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, {"tasks": [
        {"id": "x", "max_retries": 3, "command": ["definitely-not-a-program-xyz"]}]})
    proc = cli("run", str(plan), "--json", cwd=tmp_path)
    assert proc.returncode == 1
    data = one_json_object(proc.stdout)
    assert data["tasks"]["x"]["attempts"] == 1
    assert "program not found" in data["tasks"]["x"]["error"]


def test_a_program_that_is_not_executable_is_a_clean_failure(tmp_path: Path) -> None:
    script = tmp_path / "not-executable.sh"
    script.write_text("echo hi\n")
    script.chmod(0o644)
    plan = write_plan(tmp_path, {"tasks": [
        {"id": "x", "max_retries": 3, "command": [str(script)]},
        {"id": "d", "max_retries": 3, "command": [str(tmp_path)]},
        {"id": "gone", "max_retries": 3, "command": [str(tmp_path / "no-such-file")]}]})
    proc = cli("run", str(plan), "--json", cwd=tmp_path)
    assert proc.returncode == 1
    tasks = one_json_object(proc.stdout)["tasks"]
    assert "program is not executable" in tasks["x"]["error"]
    assert "program is not executable" in tasks["d"]["error"]
    assert "program not found" in tasks["gone"]["error"]
    assert all(t["attempts"] == 1 for t in tasks.values())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_program_dies_with_its_runner(tmp_path: Path) -> None:
    """The program gets SIGKILL as its parent-death signal, so a runner killed with -9
    leaves no agent working behind it; and it is started by the runner itself (its parent)."""
    probe = ("import ctypes, os; s = ctypes.c_int(); "
             "ctypes.CDLL(None).prctl(2, ctypes.byref(s)); print(s.value, os.getppid())")
    plan = write_plan(tmp_path, {"tasks": [{"id": "p", "command": ["python", "-c", probe]}]})
    proc = cli("run", str(plan), "--json", "--no-store", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    signal_number, parent = one_json_object(proc.stdout)["tasks"]["p"]["output"].split()
    assert int(signal_number) == signal.SIGKILL
    assert int(parent) > 1


@pytest.mark.parametrize(
    "tasks, message",
    [
        ([{"id": "a", "command": ["true"], "depends_on": ["c"]},
          {"id": "b", "command": ["true"], "depends_on": ["a"]},
          {"id": "c", "command": ["true"], "depends_on": ["b"]}],
         "dependency cycle: a -> c -> b -> a"),
        ([{"id": "backend", "command": ["true"]},
          {"id": "audit", "command": ["true"], "depends_on": ["backnd"]}],
         "tasks[1] (audit).depends_on: unknown task 'backnd'; did you mean 'backend'?"),
        ([{"id": "a", "command": ["true"]}, {"id": "a", "command": ["true"]}],
         "tasks[1] (a): duplicate task id 'a' (first used by tasks[0])"),
    ],
    ids=["cycle", "unknown-dependency", "duplicate-id"],
)
def test_invalid_plans_exit_2_without_traceback(tmp_path: Path, tasks: list, message: str) -> None:
    plan = write_plan(tmp_path, {"tasks": tasks}, name="plan.yaml")
    proc = cli("run", str(plan), "--json", cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "invalid plan in" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stdout == ""


def test_many_problems_in_one_message(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("nme: x\ntasks:\n  - {id: a, command: [sleep, 0], priority: urgent}\n"
                    "  - {id: b, command: [\"true\"], depends_on: [zz], pool: gpu}\n")
    proc = cli("run", str(path), cwd=tmp_path)
    assert proc.returncode == 2
    assert "4 problems" in proc.stderr
    for fragment in ("did you mean 'name'", "unknown priority 'urgent'", "unknown task 'zz'",
                     "unknown pool 'gpu'"):
        assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "missing.yaml"], "no such plan file: missing.yaml"),
        (["run", "plan.json", "--strategy", "fastest"], "unknown strategy 'fastest'"),
        (["run", "plan.json", "--max-workers", "0"], "max-workers"),
        (["run", "plan.json", "--budget", "inf"], "--budget must be a finite number"),
        (["run", "plan.txt"], "use a .yaml, .yml or .json file"),
        (["run", "."], "is a directory"),
        (["run"], "PLAN"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], fragment: str) -> None:
    write_plan(tmp_path, {"tasks": [{"id": "a", "command": ["true"]}]})
    (tmp_path / "plan.txt").write_text("tasks: []")
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("text", ["", "tasks: []\n", "name: x\n"],
                         ids=["empty", "no-tasks", "name-only"])
def test_a_plan_file_without_tasks_exits_2(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    for command in (["run", "--json"], ["plan"]):
        proc = cli(command[0], str(path), *command[1:], cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert f"invalid plan in {path}" in proc.stderr
        assert "the plan has no tasks; add at least one under tasks:" in proc.stderr
        assert proc.stdout == ""


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("tasks: [{id: b, command: 5}]\n",
         "tasks[0] (b).command: command must be a list of strings"),
        ("tasks: [{id: b, command: true}]\n",
         "tasks[0] (b).command: command must be a list of strings"),
        ("tasks: [{id: b, command: [echo], estimated_seconds: 1e400}]\n",
         "tasks[0] (b).estimated_seconds: Input should be a finite number"),
        ("tasks: [{id: b, command: [echo], timeout_sec: .nan}]\n",
         "tasks[0] (b).timeout_sec: Input should be a finite number"),
        ('tasks: [{id: "nul\\0x", command: [echo]}]\n', "contains the control character"),
        ("tasks: [{id: b, command: [echo], env: {A: [abc, def]}}]\n",
         "A: a list is not an environment value"),
        ("tasks: [{id: a, command: [echo]}]\ntasks: [{id: b, command: [echo]}]\n",
         "line 2 column 1: invalid YAML: duplicate key 'tasks' (first on line 1)"),
        ("strategy: pipeline\nstages: [build]\ntasks: [{id: b, command: [echo], stage: biuld}]\n",
         "tasks[0] (b).stage: stage 'biuld' is not listed in `stages` (build); "
         "did you mean 'build'?"),
    ],
    ids=["command-int", "command-bool", "inf", "nan", "nul-id", "env-list", "duplicate-key",
         "stage"],
)
def test_bad_values_are_plan_errors_never_tracebacks(tmp_path: Path, text: str,
                                                     fragment: str) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    for command in (["run", "--json", "--no-store"], ["plan"]):
        proc = cli(command[0], str(path), *command[1:], cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert f"invalid plan in {path}" in proc.stderr
        assert fragment in proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_stage_problems_of_a_pipeline_asked_for_on_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("stages: [build, test]\ntasks:\n  - {id: a, command: [echo], stage: tset}\n")
    for command in ("run", "plan"):
        proc = cli(command, str(path), "--strategy", "pipeline", cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert f"invalid plan in {path}: 1 problem" in proc.stderr
        assert ("tasks[0] (a).stage: stage 'tset' is not listed in `stages` (build, test); "
                "did you mean 'test'?") in proc.stderr


def test_sigint_cancels_cleanly_exit_130(tmp_path: Path, cleanup_pids: list[Path]) -> None:
    spawner = script(tmp_path, "spawner.py", SPAWNER)
    pids_file = tmp_path / "pids"
    cleanup_pids.append(pids_file)
    plan = write_plan(tmp_path, {"tasks": [
        {"id": "one", "command": ["python", spawner, str(pids_file)]},
        {"id": "two", "command": ["python", spawner, str(pids_file)]},
        {"id": "after", "depends_on": ["one"], "command": ["python", "-c", "print(1)"]},
    ]})
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallel_agents", "run", str(plan), "--json"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while len(recorded_pids(pids_file)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = recorded_pids(pids_file)
        assert len(pids) == 4, "tasks did not start"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    data = one_json_object(stdout)
    assert data["status"] == "cancelled"
    assert {t: r["status"] for t, r in data["tasks"].items()} == {
        "one": "cancelled", "two": "cancelled", "after": "cancelled"}
    assert "Traceback" not in stderr
    assert wait_gone(pids) == [], "orphan processes after SIGINT"


def test_fail_fast(tmp_path: Path, cleanup_pids: list[Path]) -> None:
    spawner = script(tmp_path, "spawner.py", SPAWNER)
    pids_file = tmp_path / "pids"
    cleanup_pids.append(pids_file)
    plan = write_plan(tmp_path, {
        "pools": {"one": {"max_concurrent": 1}},
        "tasks": [
            {"id": "bad", "command": ["python", "-c",
                                      "import time, sys; time.sleep(1); sys.exit(1)"]},
            {"id": "long", "pool": "one", "command": ["python", spawner, str(pids_file)]},
            {"id": "queued", "pool": "one", "command": ["python", "-c", "print(1)"]},
            {"id": "child", "depends_on": ["bad"], "command": ["python", "-c", "print(1)"]},
        ],
    })
    started = time.monotonic()
    proc = cli("run", str(plan), "--json", "--fail-fast", cwd=tmp_path)
    assert time.monotonic() - started < 40
    assert proc.returncode == 1, proc.stderr
    data = one_json_object(proc.stdout)
    tasks = data["tasks"]
    assert data["status"] == "failed"
    assert tasks["bad"]["status"] == "failed"
    assert tasks["long"]["status"] == "cancelled"
    assert tasks["queued"]["status"] == "skipped" and "fail-fast" in tasks["queued"]["error"]
    assert tasks["child"]["status"] == "skipped"
    assert wait_gone(recorded_pids(pids_file)) == []
    # Without --fail-fast the same failure lets independent work finish (checked above).


def test_strategy_option_and_human_summary(tmp_path: Path) -> None:
    plan = write_plan(tmp_path, {"tasks": [
        {"id": f"t{i}", "command": ["python", "-c", "import time; time.sleep(0.2)"]}
        for i in range(3)
    ]})
    proc = cli("run", str(plan), "--strategy", "sequential", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = one_json_object(proc.stdout)
    assert data["strategy"] == "sequential"
    spans = sorted((t["started_at"], t["finished_at"]) for t in data["tasks"].values())
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end
    assert "makespan" in proc.stderr and "speedup" in proc.stderr
    quiet = cli("run", str(plan), "--quiet", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""


def test_restaurant_example_runs_in_parallel(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    # The example's commands are relative to the repository root, as `make run` runs them.
    proc = cli("run", "examples/restaurant.yaml", "--json", "--store",
               str(tmp_path / "runs.db"), cwd=root)
    assert proc.returncode == 0, proc.stderr
    data = one_json_object(proc.stdout)
    tasks = data["tasks"]
    assert data["status"] == "succeeded"
    # frontend, backend and schema overlap; the audit starts only after the backend ends.
    first_end = min(tasks[t]["finished_at"] for t in ("frontend", "backend", "schema"))
    assert max(tasks[t]["started_at"] for t in ("frontend", "backend", "schema")) < first_end
    assert tasks["security-audit"]["started_at"] >= tasks["backend"]["finished_at"]
    # The audit's stand-in agent read the backend's output from its stdin inputs and wrote
    # its artifact into the run's workspace.
    artifact = Path(data["workspace"]) / "security-audit.md"
    assert "built on: backend" in artifact.read_text()
    assert data["critical_path"] == ["backend", "security-audit"]
    assert data["speedup"] > 1.2


def test_a_closed_progress_pipe_does_not_change_the_outcome(tmp_path: Path) -> None:
    """`parallel-agents run plan.yaml 2>&1 | head -1`: whoever reads the progress stops
    early; the run still finishes and exits with its own code."""
    plan = write_plan(tmp_path, {"name": "pipe", "tasks": [
        {"id": f"t{i}", "command": ["python", "-c", "print(1)"]} for i in range(5)]})
    proc = subprocess.Popen([sys.executable, "-m", "parallel_agents", "run", str(plan),
                             "--no-store"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    proc.stderr.readline()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0
