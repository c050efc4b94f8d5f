"""The run store through the public API and the CLI: bad files, cache, workspace, resume."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import parallel_agents as pa
from parallel_agents import StoreError, UsageError
from parallel_agents.store import RunStore


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "parallel_agents", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_plan(path: Path, plan: dict) -> Path:
    path.write_text(yaml.safe_dump(plan))
    return path


ECHO = {"name": "echo", "tasks": [{"id": "a", "command": ["python", "-c", "print('A')"]}]}


# -- bad store files ------------------------------------------------------------------------
def _foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")
    conn.execute("INSERT INTO contacts VALUES ('ada', '123')")
    conn.commit()
    conn.close()


def _corrupted_store(path: Path) -> None:
    with RunStore(path) as store:
        store.create_run("r1", plan_name="p", plan_json={}, options={}, has_callables=False,
                         workspace=None, tasks=[("a", "default")])
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # smash the schema page, keep the header
    path.write_bytes(bytes(data))


def _newer_store(path: Path) -> None:
    RunStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()


@pytest.mark.parametrize("make, expected", [
    (lambda p: p.write_text("my notes, not a database\n"), "not an SQLite database"),
    (_foreign_sqlite, "another application"),
    (_corrupted_store, "corrupted"),
    (_newer_store, "newer than this parallel-agents"),
])
@pytest.mark.parametrize("command", ["run", "list"])
def test_bad_store_file_is_a_clear_error_and_left_untouched(tmp_path, make, expected, command):
    db = tmp_path / "runs.db"
    make(db)
    before = digest(db)
    plan = write_plan(tmp_path / "plan.yaml", ECHO)
    args = ["run", str(plan), "--store", str(db)] if command == "run" else ["list", "--store",
                                                                           str(db)]
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 2
    assert expected in res.stderr
    assert str(db) in res.stderr
    assert "Traceback" not in res.stderr
    assert digest(db) == before
    assert not (tmp_path / "runs").exists() or command == "list"


def test_a_store_damaged_inside_stops_the_run_with_a_clear_error(tmp_path):
    """Damage the open checks cannot see (a table's pages, not the header or schema) shows
    when a write reaches it: a clear error and exit 2, no traceback, and no more writes."""
    db = tmp_path / "runs.db"
    plan = write_plan(tmp_path / "plan.yaml", ECHO)
    assert cli("run", str(plan), "-q", "--store", str(db), cwd=tmp_path).returncode == 0
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'outputs'").fetchone()[0]
    conn.close()
    data = bytearray(db.read_bytes())
    data[(root - 1) * page:root * page] = b"\xff" * page
    db.write_bytes(bytes(data))
    res = cli("run", str(plan), "--store", str(db), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "is corrupted" in res.stderr and "--store PATH" in res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.count("error:") == 1, res.stderr


def test_resuming_a_run_that_succeeded_changes_nothing(tmp_path):
    db = tmp_path / "runs.db"
    plan = write_plan(tmp_path / "plan.yaml", ECHO)
    first = cli("run", str(plan), "-q", "--json", "--store", str(db), cwd=tmp_path)
    record = json.loads(first.stdout)
    before = digest(db)
    again = cli("resume", record["run_id"], "--json", "--store", str(db), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already succeeded: nothing to resume" in again.stderr
    assert json.loads(again.stdout) == record
    assert digest(db) == before


def test_api_raises_store_error_for_a_text_file(tmp_path):
    db = tmp_path / "notes.db"
    db.write_text("hello")
    with pytest.raises(StoreError, match="left untouched"):
        pa.Executor(store=db)
    assert db.read_text() == "hello"


# -- run, status, list, events ------------------------------------------------------------
def test_run_records_everything_and_status_list_show_it(tmp_path):
    plan = write_plan(tmp_path / "plan.yaml", {"name": "demo", "tasks": [
        {"id": "a", "command": ["python", "-c", "print('A')"]},
        {"id": "b", "command": ["python", "-c", "import sys; sys.exit(3)"], "depends_on": ["a"]},
        {"id": "c", "command": ["python", "-c", "print('C')"], "depends_on": ["b"]},
    ]})
    res = cli("run", str(plan), "--json", "-q", cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    summary = json.loads(res.stdout)
    run_id = summary["run_id"]
    db = tmp_path / ".parallel_agents" / "runs.db"  # the default store under the cwd
    assert db.exists()
    assert summary["workspace"] == str((db.parent / "runs" / run_id).resolve())
    status = json.loads(cli("status", run_id, "--json", cwd=tmp_path).stdout)
    assert status["status"] == "partial"
    assert status["counts"] == {"succeeded": 1, "failed": 1, "skipped": 1}
    runs = json.loads(cli("list", "--json", cwd=tmp_path).stdout)
    assert [r["run_id"] for r in runs] == [run_id]
    with RunStore(db) as store:
        events = store.events(run_id)
        saved = store.load_run(run_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["kind"] == "run_started" and events[-1]["kind"] == "run_finished"
    assert saved.outputs["a"]["output"] == "A"
    assert [a.outcome for a in saved.attempts["b"]] == ["failed"]
    assert "exit code 3" in saved.attempts["b"][0].error
    assert saved.owner_pid is None  # the lease is released at the end
    missing = cli("status", "nope", cwd=tmp_path)
    assert missing.returncode == 2 and "no run 'nope'" in missing.stderr


def test_store_env_var_and_no_store(tmp_path):
    plan = write_plan(tmp_path / "plan.yaml", ECHO)
    db = tmp_path / "elsewhere" / "s.db"
    assert cli("run", str(plan), "-q", cwd=tmp_path,
               env={"PARALLEL_AGENTS_STORE": str(db)}).returncode == 0
    assert db.exists() and not (tmp_path / ".parallel_agents").exists()
    assert cli("run", str(plan), "-q", "--no-store", cwd=tmp_path).returncode == 0
    assert not (tmp_path / ".parallel_agents").exists()


# -- the result cache -----------------------------------------------------------------------
def test_cache_reuses_identical_tasks_and_reruns_changed_ones(tmp_path):
    log = tmp_path / "ran.txt"
    append = ("import os, sys; open(sys.argv[1], 'a').write(os.environ['PARALLEL_AGENTS_TASK_ID']"
              " + '\\n'); print(sys.argv[2])")

    def plan(version_of_b: str) -> Path:
        return write_plan(tmp_path / "plan.yaml", {"name": "cached", "tasks": [
            {"id": "a", "command": ["python", "-c", append, str(log), "A"]},
            {"id": "b", "command": ["python", "-c", append, str(log), version_of_b]},
            {"id": "c", "command": ["python", "-c", append, str(log), "C"], "depends_on": ["b"]},
            {"id": "d", "command": ["python", "-c", append, str(log), "D"], "depends_on": ["a"]},
        ]})

    first = json.loads(cli("run", str(plan("B1")), "--cache", "--json", "-q",
                           cwd=tmp_path).stdout)
    assert "cached" not in first
    log.unlink()
    second = json.loads(cli("run", str(plan("B2")), "--cache", "--json", "-q",
                            cwd=tmp_path).stdout)
    # b changed; c's input changed with it; a and d are identical: served from the cache.
    assert sorted(log.read_text().split()) == ["b", "c"]
    assert second["cached"] == 2
    assert second["tasks"]["a"]["cached"] is True and second["tasks"]["a"]["output"] == "A"
    assert "cached" not in second["tasks"]["b"]
    with RunStore(tmp_path / ".parallel_agents" / "runs.db") as store:
        events = store.events(second["run_id"])
    hits = {e["task_id"] for e in events
            if e["kind"] == "task_succeeded" and e.get("data", {}).get("cached")}
    assert hits == {"a", "d"}
    # Without --cache (and no `cache: true`), nothing is reused.
    log.unlink()
    third = json.loads(cli("run", str(plan("B2")), "--json", "-q", cwd=tmp_path).stdout)
    assert "cached" not in third and sorted(log.read_text().split()) == ["a", "b", "c", "d"]
    # The summary table says how many were served from the cache.
    fourth = cli("run", str(plan("B2")), "--cache", cwd=tmp_path)
    served = re.search(r"served from the cache\s+│?\s*4 of 4 succeeded", fourth.stderr)
    assert served, fourth.stderr


def test_cache_key_ignores_scheduling_fields_but_not_the_work():
    from parallel_agents.store import cache_key

    base = pa.Task(id="x", command=["echo", "1"])
    assert cache_key(base, {}) == cache_key(
        pa.Task(id="y", command=["echo", "1"], priority="high", pool="p", timeout_sec=5), {})
    assert cache_key(base, {}) != cache_key(pa.Task(id="x", command=["echo", "2"]), {})
    assert cache_key(base, {}) != cache_key(
        pa.Task(id="x", command=["echo", "1"], env={"MODEL": "m2"}), {})
    assert cache_key(base, {"a": 1}) != cache_key(base, {"a": 2})


def _mul(a, b):
    return a * b


def _adder(n):
    def add():
        return n + 1
    return add


def _recursive(n):
    def fact(k):
        return 1 if k <= 1 else k * fact(k - 1)
    return lambda: fact(n)


class _Scaler:
    def __init__(self, k):
        self.k = k

    def __call__(self):
        return self.k + 1


def test_function_tasks_that_differ_only_in_what_they_hold_get_their_own_answers(tmp_path):
    """Partials, closures and default arguments are part of a function task's identity; a
    callable object or bound method (state in its instance) is never served from the cache."""
    import functools

    def run(fn):
        with RunStore(tmp_path / "runs.db") as store:
            plan = pa.Plan(tasks=[pa.Task(id="t", run=fn, cache=True)])
            result = asyncio.run(pa.Executor(store=store).execute(plan))
        return result.tasks["t"].output, result.tasks["t"].cached

    assert run(functools.partial(_mul, 2, 3)) == (6, False)
    assert run(functools.partial(_mul, 5, 7)) == (35, False)
    assert run(functools.partial(_mul, 5, 7)) == (35, True)
    assert run(_adder(1)) == (2, False)
    assert run(_adder(100)) == (101, False)
    assert run(_adder(100)) == (101, True)
    assert run(lambda x=5: x) == (5, False)
    assert run(lambda x=6: x) == (6, False)
    assert run(_Scaler(9)) == (10, False)
    assert run(_Scaler(9)) == (10, False)  # not cached: its state is not in a key
    assert run(_Scaler(1).__call__) == (2, False)
    assert run(_recursive(5)) == (120, False)  # its closure holds itself
    assert run(_recursive(5)) == (120, True)


def test_command_tasks_that_read_their_task_are_not_served_each_others_output(tmp_path):
    """Three tasks run the same program, which answers from the task it reads on stdin (as
    examples/agents/build.py does): each keeps its own output from the cache, and a changed
    description is a changed task."""
    echo = ("import json, os, sys; t = json.load(sys.stdin)['task']; "
            "print(t['id'], os.environ['PARALLEL_AGENTS_TASK_ID'], t.get('description'))")

    def plan(description: str) -> pa.Plan:
        return pa.Plan(tasks=[pa.Task(id=tid, command=["python", "-c", echo], cache=True,
                                      description=f"{description} {tid}" if tid == "c"
                                      else tid) for tid in ("a", "b", "c")])

    with RunStore(tmp_path / "runs.db") as store:
        first = asyncio.run(pa.Executor(store=store).execute(plan("build")))
        again = asyncio.run(pa.Executor(store=store).execute(plan("build")))
        changed = asyncio.run(pa.Executor(store=store).execute(plan("rebuild")))
    assert {t: r.output.strip() for t, r in first.tasks.items()} == {
        "a": "a a a", "b": "b b b", "c": "c c build c"}
    assert all(r.cached for r in again.tasks.values())
    assert {t: r.output for t, r in again.tasks.items()} == {
        t: r.output for t, r in first.tasks.items()}
    assert not changed.tasks["c"].cached and changed.tasks["c"].output.strip() == "c c rebuild c"
    assert changed.tasks["a"].cached


def test_the_cache_tells_apart_what_an_llm_task_really_sends(tmp_path, monkeypatch):
    """A task that names no model runs on the default one, with its role's system prompt,
    on its provider's server: a cached answer is not served once any of these changed."""
    from parallel_agents.providers.base import ChatRequest, ChatResponse, FunctionProvider

    asked: list[tuple[str, str]] = []

    def handler(request: ChatRequest) -> ChatResponse:
        asked.append((request.model, request.messages[0].content))
        return ChatResponse(text=f"answer of {request.model}")

    providers = {"scripted": FunctionProvider(handler)}

    def plan(system_prompt: str = "Be brief.", **task: str) -> pa.Plan:
        fields = {"prompt": "Name a colour.", **task}
        return pa.Plan(roles={"critic": {"system_prompt": system_prompt}},
                       tasks=[pa.Task(id="a", agent="critic", cache=True, max_iterations=1,
                                      **fields)])

    def cached(model: str, run_plan: pa.Plan) -> bool:
        monkeypatch.setenv("PARALLEL_AGENTS_MODEL", f"scripted:{model}")
        result = asyncio.run(pa.Executor(store=store, providers=providers,
                                         workspace=tmp_path / "ws").execute(run_plan))
        assert result.tasks["a"].status == "succeeded", result.tasks["a"].error
        return result.tasks["a"].cached

    with RunStore(tmp_path / "runs.db") as store:
        assert not cached("m1", plan())
        assert not cached("m2", plan()), "another default model"
        assert cached("m1", plan()) and cached("m2", plan())
        assert not cached("m1", plan("Disagree with everything.")), "the role's system prompt"
        # Without a prompt, the description is what is sent: it is part of the key then.
        assert not cached("m1", plan(prompt=None, description="Write a poem."))
        assert not cached("m1", plan(prompt=None, description="Delete the tests."))
        assert cached("m1", plan(prompt=None, description="Write a poem."))
    assert [model for model, _ in asked] == ["m1", "m2", "m1", "m1", "m1"]


def test_an_llm_tasks_cache_key_names_its_providers_server():
    from parallel_agents.agents.llm import call_identity
    from parallel_agents.store import cache_key

    task = pa.Task(id="a", prompt="Hi.", model="openai:m")

    def key(base_url: str) -> str:
        plan = pa.Plan(providers={"openai": {"base_url": base_url}}, tasks=[task])
        return cache_key(task, {}, call_identity(task, plan, {}))

    assert key("http://127.0.0.1:1/v1") == key("http://127.0.0.1:1/v1")
    assert key("http://127.0.0.1:1/v1") != key("http://127.0.0.1:2/v1")


def test_metadata_is_stored_with_a_run_and_must_be_json(tmp_path, monkeypatch):
    monkeypatch.setenv("PARALLEL_AGENTS_MODEL", "openai:the-run-default")
    plan = pa.Plan(tasks=[pa.Task(id="a", command=["python", "-c", "print(1)"])])
    with RunStore(tmp_path / "runs.db") as store:
        executor = pa.Executor(store=store)
        result = asyncio.run(executor.execute(plan, metadata={"ticket": "T-1", "n": [1, 2]}))
        saved = store.load_run(result.run_id)
        with pytest.raises(UsageError, match="run metadata must be JSON values"):
            asyncio.run(executor.execute(plan, metadata={"when": object()}))
    assert saved.options["metadata"] == {"ticket": "T-1", "n": [1, 2]}
    assert saved.options["default_model"] == "openai:the-run-default"


def test_files_after_gives_a_file_as_the_task_left_it(tmp_path):
    """The checkpoint after each task keeps its files: a later writer does not hide them."""
    from parallel_agents.store.workspace import files_after

    def writer(text: str):  # noqa: ANN202
        async def write(ctx):  # noqa: ANN001, ANN202
            (Path(ctx.workspace) / "shared.txt").write_text(text)
            return pa.TaskOutput(output=text, files=["shared.txt"])
        return write

    plan = pa.Plan(tasks=[pa.Task(id="first", run=writer("v1")),
                          pa.Task(id="second", run=writer("v2"), depends_on=["first"])])
    ws = tmp_path / "ws"
    with RunStore(tmp_path / "runs.db") as store:
        asyncio.run(pa.Executor(store=store, workspace=ws).execute(plan))
    assert files_after(ws, "first", ["shared.txt", "missing.txt"]) == {"shared.txt": "v1"}
    assert files_after(ws, "second", ["shared.txt"]) == {"shared.txt": "v2"}
    assert files_after(ws, "never-ran", ["shared.txt"]) == {}


# -- the workspace ---------------------------------------------------------------------------
WRITE = "import os, sys, pathlib; pathlib.Path(os.environ['PARALLEL_AGENTS_WORKSPACE'], sys.argv[1]).write_text(sys.argv[2])"


def test_rollback_on_failure_keeps_succeeded_artifacts(tmp_path):
    fail = WRITE + "; sys.exit(1)"
    plan = write_plan(tmp_path / "plan.yaml", {"name": "rb", "tasks": [
        {"id": "good", "command": ["python", "-c", WRITE, "good.txt", "kept"]},
        {"id": "bad", "command": ["python", "-c", fail, "good.txt", "clobbered"],
         "depends_on": ["good"]},
        {"id": "worse", "command": ["python", "-c", fail, "partial.txt", "junk"],
         "depends_on": ["good"]},
    ]})
    res = cli("run", str(plan), "--rollback-on-failure", "--json", "-q", cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    summary = json.loads(res.stdout)
    ws = Path(summary["workspace"])
    assert (ws / "good.txt").read_text() == "kept"
    assert not (ws / "partial.txt").exists()
    assert summary["rollback"]["removed"] == ["partial.txt"]
    assert summary["rollback"]["restored"] == ["good.txt"]
    # Coordination files are current: one activity line per attempt, state as YAML.
    log = (ws / "activity_log.md").read_text()
    assert log.count("| good |") == 1 and log.count("| bad |") == 1
    state = yaml.safe_load((ws / "project_state.yaml").read_text())
    assert state["status"] == "partial"
    assert state["tasks"]["good"]["status"] == "succeeded"
    assert state["tasks"]["worse"] == {"status": "failed", "pool": "default", "attempts": 1}
    assert (ws / "scratchpad.md").exists()
    # The summary on stderr says what the rollback did.
    res = cli("run", str(plan), "--rollback-on-failure", cwd=tmp_path)
    assert ("rolled back to its last checkpoint (--rollback-on-failure): 1 file(s) removed "
            "(partial.txt), 1 file(s) restored (good.txt)") in res.stderr
    # Without the flag the failed task's files stay.
    res = cli("run", str(plan), "--json", "-q", cwd=tmp_path)
    assert (Path(json.loads(res.stdout)["workspace"]) / "partial.txt").exists()


def test_pipeline_checkpoints_before_between_stages_and_after_tasks(tmp_path):
    async def main() -> list[dict]:
        store = RunStore(tmp_path / "runs.db")

        def writer(name: str):
            def task(ctx):
                (ctx.workspace / name).write_text(name)
            return task

        plan = pa.Plan(strategy="pipeline", stages=["one", "two"], tasks=[
            pa.Task(id="a", run=writer("a.txt"), stage="one"),
            pa.Task(id="b", run=writer("b.txt"), stage="one"),
            pa.Task(id="c", run=writer("c.txt"), stage="two", depends_on=["a"]),
        ])
        result = await pa.Executor(store=store).execute(plan)
        assert result.status == "succeeded"
        from parallel_agents.store import Workspace
        ws = Workspace(Path(result.workspace), run_id=result.run_id, plan=plan,
                       strategy="pipeline")
        store.close()
        return ws.checkpoints()

    checkpoints = asyncio.run(main())
    labels = [label for c in checkpoints for label in c["labels"]]
    assert labels[0] == "start"
    assert "stage:one" in labels and "stage:two" in labels
    assert {"after:a", "after:b", "after:c"} <= set(labels)
    assert checkpoints[-1]["files"] == 3


# -- resuming function plans from Python ----------------------------------------------------
CRASHING_SCRIPT = """
import os, sys, time, parallel_agents as pa
from parallel_agents.store import RunStore
sys.path.insert(0, {here!r})
from fplan import make_plan
store = RunStore({db!r})
plan = make_plan({log!r}, crash_after=3)
pa.run(plan, store=store)
"""


def test_function_plans_resume_with_the_callers_plan(tmp_path):
    (tmp_path / "fplan.py").write_text(
        "import os\n"
        "import parallel_agents as pa\n"
        "def make_plan(log, crash_after=None):\n"
        "    def step(ctx):\n"
        "        with open(log, 'a') as fh:\n"
        "            fh.write(ctx.task.id + '\\n')\n"
        "        done = open(log).read().split()\n"
        "        if crash_after is not None and len(done) >= crash_after:\n"
        "            os.kill(os.getpid(), 9)\n"
        "        return ctx.task.id.upper()\n"
        "    return pa.Plan(tasks=[pa.Task(id=f's{i}', run=step, max_retries=1,\n"
        "                   depends_on=[f's{i-1}'] if i else []) for i in range(6)])\n")
    db, log = tmp_path / "runs.db", tmp_path / "log.txt"
    script = CRASHING_SCRIPT.format(here=str(tmp_path), db=str(db), log=str(log))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert res.returncode == -9
    sys.path.insert(0, str(tmp_path))
    try:
        from fplan import make_plan
    finally:
        sys.path.remove(str(tmp_path))
    with RunStore(db) as store:
        run_id = store.list_runs()[0]["run_id"]
    res = cli("resume", run_id, "--store", str(db), cwd=tmp_path)
    assert res.returncode == 2 and "Python function tasks" in res.stderr
    with RunStore(db) as store:
        with pytest.raises(UsageError, match="cannot be reloaded from the store"):
            asyncio.run(pa.Executor(store=store).resume(run_id))
        result = asyncio.run(pa.Executor(store=store).resume(run_id, plan=make_plan(str(log))))
    assert result.status == "succeeded"
    assert [result.tasks[f"s{i}"].output for i in range(6)] == [f"S{i}" for i in range(6)]
    ran = log.read_text().split()
    # s0, s1 committed before the crash and never ran again; s2 was interrupted and re-ran.
    assert ran == ["s0", "s1", "s2", "s2", "s3", "s4", "s5"]
    # The attempt record is written in the background: a process killed within a millisecond
    # of starting s2 may not have stored it (documented); otherwise it shows as interrupted.
    assert [a.outcome for a in result.tasks["s2"].history] in (
        ["interrupted", "succeeded"], ["succeeded"])


def test_coordination_files_keep_up_while_a_long_task_runs(tmp_path):
    """The activity log and project_state.yaml are rate-limited under load; once the run
    goes quiet what was held back is written, not left until the next task ends."""
    plan = {"name": "long", "tasks": [
        {"id": "quick", "command": ["python", "-c", "print('q')"]},
        {"id": "long", "command": ["python", "-c", "import time; time.sleep(30)"]},
    ]}
    write_plan(tmp_path / "plan.yaml", plan)
    proc = subprocess.Popen([sys.executable, "-m", "parallel_agents", "run", "plan.yaml", "-q",
                             "--store", "runs.db"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        runs = tmp_path / "runs"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "files never caught up"
            spaces = list(runs.glob("*/project_state.yaml")) if runs.exists() else []
            if spaces:
                state = yaml.safe_load(spaces[0].read_text() or "{}") or {}
                log = (spaces[0].parent / "activity_log.md").read_text()
                if (state.get("tasks", {}).get("quick", {}).get("status") == "succeeded"
                        and "| quick |" in log):
                    break
            time.sleep(0.1)
        assert state["tasks"]["long"]["status"] == "running"
    finally:
        proc.kill()
        proc.communicate()


def test_a_resume_that_fails_its_checks_leaves_the_run_as_it_was(tmp_path):
    """A function plan resumed without its plan is refused; the stored run keeps its status
    (it is not made to look interrupted) and its lease is given back."""
    plan = pa.Plan(tasks=[pa.Task(id="t", run=lambda: 1)])
    with RunStore(tmp_path / "runs.db") as store:
        run_id = asyncio.run(pa.Executor(store=store).execute(plan)).run_id
        with pytest.raises(UsageError, match="cannot be reloaded"):
            asyncio.run(pa.Executor(store=store).resume(run_id))
        store.flush()
        saved = store.load_run(run_id)
    assert (saved.status, saved.display_status(), saved.owner_pid) == (
        "succeeded", "succeeded", None)


def test_ids_beyond_ascii_and_pipes_read_back_from_the_coordination_files(tmp_path):
    plan = pa.Plan(tasks=[pa.Task(id="rocket 🚀", run=lambda: 1),
                          pa.Task(id="pipe|id", run=lambda: 2)])
    with RunStore(tmp_path / "runs.db") as store:
        result = asyncio.run(pa.Executor(store=store).execute(plan))
    ws = Path(result.workspace)
    state = yaml.safe_load((ws / "project_state.yaml").read_text(encoding="utf-8"))
    assert set(state["tasks"]) == {"rocket 🚀", "pipe|id"}
    rows = [line for line in (ws / "activity_log.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("| 2")]
    assert len(rows) == 2 and all(len(r.split(" | ")) == 6 for r in rows)
    assert any(" pipe\\|id " in r for r in rows)


def test_a_success_whose_event_the_crash_lost_is_logged_once(tmp_path):
    """Resume re-emits task_succeeded (data.recovered) for a success committed just before a
    crash; its activity row, if the crash did not lose it too, is not written twice."""
    from parallel_agents.events import Event
    from parallel_agents.store.workspace import Workspace

    plan = pa.Plan(tasks=[pa.Task(id="t", command=["true"])])
    ws = Workspace(tmp_path / "ws", run_id="r", plan=plan, strategy="dependency")
    ws.start("start")
    ws.on_event(Event("task_started", "r", 100.0, "t", 1))
    ws.on_event(Event("task_succeeded", "r", 101.0, "t", 1))
    ws.on_event(Event("task_succeeded", "r", 102.0, "t", 1, None, {"recovered": True}))
    ws.close("succeeded", rollback=False)
    log = (tmp_path / "ws" / "activity_log.md").read_text()
    assert log.count("| t |") == 1, log


def test_a_killed_runner_left_as_a_zombie_is_not_alive():
    """Until its parent reaps it, a killed runner is a zombie: signal 0 still reaches it, but
    it runs nothing, and its run may be resumed at once."""
    from parallel_agents.store.sqlite import pid_alive

    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert pid_alive(proc.pid)
        os.kill(proc.pid, 9)
        deadline = time.monotonic() + 10
        while pid_alive(proc.pid):  # not reaped yet: a zombie
            assert time.monotonic() < deadline, "a zombie counts as alive"
            time.sleep(0.01)
        assert Path(f"/proc/{proc.pid}").exists()  # still there, unreaped
    finally:
        proc.kill()
        proc.wait()


def test_a_store_on_a_read_only_mount_is_not_called_corrupted(tmp_path):
    """SQLite writes next to a store even to read it: on a read-only mount the error says
    so, rather than calling a healthy file corrupted. (Needs a mount namespace: root with
    util-linux `unshare`, as in CI; skipped elsewhere.)"""
    import shutil

    store_dir = tmp_path / "ro"
    store_dir.mkdir()
    plan = write_plan(tmp_path / "plan.yaml", ECHO)
    assert cli("run", str(plan), "-q", "--store", str(store_dir / "s.db"),
               cwd=tmp_path).returncode == 0
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare to make a read-only mount")
    script = (f"mount --bind {store_dir} {store_dir} && "
              f"mount -o remount,bind,ro {store_dir} && "
              f"{sys.executable} -m parallel_agents list --store {store_dir / 's.db'}")
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    if "mount:" in res.stderr or "unshare:" in res.stderr:
        pytest.skip(f"no read-only mount here: {res.stderr.strip()[:200]}")
    assert res.returncode == 2, res.stderr
    assert "read-only" in res.stderr and "corrupted" not in res.stderr
    assert "Traceback" not in res.stderr


def test_a_run_whose_workspace_is_deleted_under_it_still_finishes(tmp_path):
    """The coordination files are written by the store's writer thread: a write that fails
    there (the workspace deleted, a full disk) must not stop the thread whose commits every
    task waits for."""
    plan = write_plan(tmp_path / "plan.yaml", {"name": "gone", "tasks": [
        {"id": "wipe", "command": ["sh", "-c", 'rm -rf "$PARALLEL_AGENTS_WORKSPACE"']},
        *({"id": f"after{i}", "command": ["python", "-c", "print(1)"], "depends_on": ["wipe"]}
          for i in range(5))]})
    res = cli("run", str(plan), "-q", "--json", "--store", str(tmp_path / "runs.db"),
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["counts"]["succeeded"] == 6
