"""Crash safety through the real CLI: SIGKILL the runner at random points, resume, check."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

N_TASKS = 50
APPEND = ("import os, sys, time; time.sleep(float(sys.argv[2])); "
          "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT); "
          "os.write(fd, (os.environ['PARALLEL_AGENTS_TASK_ID'] + '\\n').encode()); "
          "os.close(fd)")


def cli(*args: str, cwd: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "parallel_agents", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def write_plan(tmp: Path, log: Path) -> Path:
    tasks = []
    for i in range(N_TASKS):
        tasks.append({
            "id": f"t{i:02d}",
            "command": ["python", "-c", APPEND, str(log), str(0.05 + (i % 5) * 0.02)],
            "depends_on": [f"t{i - 7:02d}"] if i >= 7 else [],
        })
    plan = {"name": "crash", "pools": {"default": {"max_concurrent": 4, "max_retries": 10,
                                                   "retry_backoff_sec": 0}}, "tasks": tasks}
    path = tmp / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def store_rows(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def wait_for_run(db: Path, proc: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            try:
                rows = store_rows(db, "SELECT id FROM runs")
            except sqlite3.Error:
                rows = []
            if rows:
                return rows[0][0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("the run never appeared in the store")


def succeeded(db: Path, run_id: str) -> set[str]:
    return {r[0] for r in store_rows(db, "SELECT task_id FROM outputs WHERE run_id = ?",
                                     (run_id,))}


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_at_random_points_then_resume_runs_each_succeeded_task_once(tmp_path: Path):
    seed = int(os.environ.get("PA_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    log = tmp_path / "log.txt"
    plan = write_plan(tmp_path, log)
    db = tmp_path / "runs.db"
    env = {**os.environ, "PARALLEL_AGENTS_STORE": str(db)}

    proc = cli("run", str(plan), "-q", cwd=tmp_path, env=env)
    run_id = wait_for_run(db, proc)
    done_before_kills: set[str] = set()
    checks: list[tuple[int, set[str]]] = []  # (log lines at the kill, tasks committed by then)
    kills = 0
    for _ in range(3):
        time.sleep(rng.uniform(0.05, 1.2))
        if proc.poll() is not None:
            break  # finished before this kill point
        kill(proc)
        kills += 1
        now_done = succeeded(db, run_id)
        assert done_before_kills <= now_done, f"seed {seed}: a committed task was lost"
        done_before_kills = now_done
        time.sleep(0.2)  # the runner's agents die with it (PDEATHSIG); let them go
        checks.append((len(log.read_text().split()) if log.exists() else 0, now_done))
        status = subprocess.run(
            [sys.executable, "-m", "parallel_agents", "status", run_id, "--json"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        state = json.loads(status.stdout)["status"]
        assert state in ("interrupted", "succeeded")
        proc = cli("resume", run_id, "-q", cwd=tmp_path, env=env)
        if state == "succeeded":
            break  # killed while exiting, after the run had finished
    out, errs = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"seed {seed}: {errs}"

    final = cli("resume", run_id, "--json", "-q", cwd=tmp_path, env=env)
    out, errs = final.communicate(timeout=60)
    assert final.returncode == 0, errs
    summary = json.loads(out)
    assert summary["status"] == "succeeded"
    assert summary["counts"]["succeeded"] == N_TASKS

    lines = log.read_text().split()
    counts = Counter(lines)
    assert set(counts) == {f"t{i:02d}" for i in range(N_TASKS)}, f"seed {seed}"
    assert kills >= 1, f"seed {seed}: the run finished before the first kill"
    for position, committed in checks:
        again = committed & set(lines[position:])
        assert not again, f"seed {seed}: committed before a kill, yet ran again: {again}"
    # Exactly once: a task committed before the first kill ran in the first process only,
    # once; every later kill: nothing committed by then ran again (checked above). (A task
    # running at a kill may have run twice: that is an interrupted attempt, not a duplicate.)
    for task_id in checks[0][1]:
        assert counts[task_id] == 1, f"seed {seed}: {task_id} ran {counts[task_id]} times"

    events = store_rows(db, "SELECT seq, kind, task_id FROM events WHERE run_id = ? "
                            "ORDER BY seq", (run_id,))
    assert [e[0] for e in events] == list(range(1, len(events) + 1)), "gaps in the event stream"
    assert events[0][1] == "run_started" and events[-1][1] == "run_finished"
    ok = Counter(e[2] for e in events if e[1] == "task_succeeded")
    assert ok == Counter({f"t{i:02d}": 1 for i in range(N_TASKS)})
    starts = sum(1 for e in events if e[1] == "run_started")
    # The run, each resume after a kill, the final resume; a kill that lands before a resume
    # commits anything loses that resume's run_started (nothing else happened in it).
    assert 2 <= starts <= kills + 2
    attempts = store_rows(db, "SELECT outcome FROM attempts WHERE run_id = ?", (run_id,))
    assert not [a for a in attempts if a[0] == "running"]


def _interrupt_plan(tmp: Path) -> Path:
    slow = ("import os, time, pathlib; "
            "pathlib.Path('pids').mkdir(exist_ok=True); "
            "pathlib.Path('pids', str(os.getpid())).touch(); "
            "time.sleep(20 if os.environ['PARALLEL_AGENTS_ATTEMPT'] == '1' else 3)")
    plan = {"name": "interrupt", "tasks": [
        {"id": "retryable", "command": ["python", "-c", slow], "max_retries": 1,
         "retry_backoff_sec": 0},
        {"id": "no-retries", "command": ["python", "-c", slow], "max_retries": 0},
    ]}
    path = tmp / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def _kill_orphans(tmp: Path) -> None:
    for p in (tmp / "pids").glob("*"):
        try:
            os.kill(int(p.name), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _start_and_kill_when_running(tmp: Path, env: dict, db: Path) -> str:
    proc = cli("run", str(_interrupt_plan(tmp)), "-q", cwd=tmp, env=env)
    run_id = wait_for_run(db, proc)
    deadline = time.monotonic() + 60
    while len(store_rows(db, "SELECT 1 FROM attempts WHERE run_id = ?", (run_id,))) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    kill(proc)
    return run_id


def test_interrupted_attempts_are_counted_and_retried_if_retries_remain(tmp_path: Path):
    db = tmp_path / "runs.db"
    env = {**os.environ, "PARALLEL_AGENTS_STORE": str(db)}
    try:
        run_id = _start_and_kill_when_running(tmp_path, env, db)
        res = subprocess.run([sys.executable, "-m", "parallel_agents", "resume", run_id,
                              "--json", "-q"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=60)
    finally:
        _kill_orphans(tmp_path)
    assert res.returncode == 1, res.stderr
    tasks = json.loads(res.stdout)["tasks"]
    debug = (run_id, store_rows(db, "SELECT * FROM attempts"),
             store_rows(db, "SELECT seq, kind, task_id, attempt FROM events"))
    retried = tasks["retryable"]
    assert retried["status"] == "succeeded"
    assert [a["outcome"] for a in retried["history"]] == ["interrupted", "succeeded"], debug
    spent = tasks["no-retries"]
    assert spent["status"] == "failed"
    assert [a["outcome"] for a in spent["history"]] == ["interrupted"]
    assert "no retries left" in spent["error"]


def test_two_processes_resuming_the_same_run_one_wins(tmp_path: Path):
    db = tmp_path / "runs.db"
    env = {**os.environ, "PARALLEL_AGENTS_STORE": str(db)}
    try:
        run_id = _start_and_kill_when_running(tmp_path, env, db)
        # The retry of "retryable" takes 3 s: the winner holds the run while the other tries.
        first = cli("resume", run_id, "-q", cwd=tmp_path, env=env)
        second = cli("resume", run_id, "-q", cwd=tmp_path, env=env)
        out1, err1 = first.communicate(timeout=60)
        out2, err2 = second.communicate(timeout=60)
    finally:
        _kill_orphans(tmp_path)
    codes = sorted([first.returncode, second.returncode])
    loser_err = err1 if first.returncode == 2 else err2
    assert codes == [1, 2], (err1, err2)
    assert "being run by another process" in loser_err
    assert "Traceback" not in loser_err


KILL_RUNNER = "import os, signal; os.kill(os.getppid(), signal.SIGKILL)"


def test_a_task_that_kills_its_runner_at_once_is_counted_and_runs_out_of_retries(
        tmp_path: Path):
    """A poison task: its command SIGKILLs the runner the moment it starts, before any
    batching delay would have written the attempt's start. Each resume must count the
    attempt, so the task runs out of retries and the run ends, rather than every resume
    starting it again and dying."""
    db = tmp_path / "runs.db"
    env = {**os.environ, "PARALLEL_AGENTS_STORE": str(db)}
    plan = {"name": "poison", "tasks": [
        {"id": "ok", "command": ["python", "-c", "pass"]},
        {"id": "poison", "command": ["python", "-c", KILL_RUNNER], "max_retries": 1,
         "retry_backoff_sec": 0, "depends_on": ["ok"]}]}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    res = subprocess.run([sys.executable, "-m", "parallel_agents", "run", "plan.yaml", "-q"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == -signal.SIGKILL, res.stderr
    run_id = store_rows(db, "SELECT id FROM runs")[0][0]
    codes = []
    for _ in range(4):  # attempt 2 kills the first resume; the second ends the run
        res = subprocess.run([sys.executable, "-m", "parallel_agents", "resume", run_id,
                              "--json", "-q"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=60)
        codes.append(res.returncode)
        if res.returncode != -signal.SIGKILL:
            break
    assert codes == [-signal.SIGKILL, 1], (codes, res.stderr)
    tasks = json.loads(res.stdout)["tasks"]
    assert tasks["ok"]["status"] == "succeeded"
    poison = tasks["poison"]
    assert poison["status"] == "failed"
    assert [a["outcome"] for a in poison["history"]] == ["interrupted", "interrupted"]


GATE = ("import os, signal, sys\n"
        "if os.path.exists(sys.argv[1]):\n"
        "    print('through the gate')\n"
        "else:\n"
        "    open(sys.argv[1], 'w').close()\n"
        "    os.kill(os.getppid(), signal.SIGKILL)\n")


def test_resume_goes_on_replaying_the_runs_cassettes(tmp_path: Path):
    """A run replaying recorded LLM answers (--replay, offline) and killed half-way is
    resumed with the same cassettes: the resume does not start calling the real model."""
    from tests.fakes.openai_server import FakeLLMServer, Reply

    marker, cassettes = tmp_path / "gate-open", tmp_path / "cassettes"
    env = {**os.environ, "PARALLEL_AGENTS_STORE": str(tmp_path / "runs.db"),
           "FAKE_LLM_KEY": "sk-fake-replay"}

    def plan(base_url: str) -> str:
        (tmp_path / "plan.yaml").write_text(yaml.safe_dump({
            "name": "replayed",
            "providers": {"openai": {"base_url": base_url, "api_key_env": "FAKE_LLM_KEY"}},
            "tasks": [
                {"id": "gate", "command": ["python", "-c", GATE, str(marker)],
                 "max_retries": 1, "retry_backoff_sec": 0},
                {"id": "ask", "prompt": "Say hello.", "model": "openai:recorded-model",
                 "max_iterations": 1, "max_retries": 0, "depends_on": ["gate"]}]}))
        return "plan.yaml"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "parallel_agents", *args, "--json", "-q"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)

    with FakeLLMServer() as srv:
        srv.default = Reply.text("the recorded answer")
        marker.touch()
        recorded = cli("run", plan(srv.openai_base_url), "--record", str(cassettes))
        assert recorded.returncode == 0, recorded.stderr
        url = srv.openai_base_url
    # The server is gone: only the cassettes can answer now.
    marker.unlink()
    killed = cli("run", plan(url), "--replay", str(cassettes))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run_id = store_rows(tmp_path / "runs.db",
                        "SELECT id FROM runs ORDER BY created_at DESC LIMIT 1")[0][0]
    # Without its cassettes the run cannot go on as it was: said clearly, nothing runs.
    cassettes.rename(tmp_path / "elsewhere")
    missing = cli("resume", run_id)
    assert missing.returncode == 2 and "replays recorded LLM answers" in missing.stderr
    assert f"cannot resume run {run_id}" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "elsewhere").rename(cassettes)
    resumed = cli("resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    tasks = json.loads(resumed.stdout)["tasks"]
    assert tasks["ask"]["output"] == "the recorded answer"
    assert tasks["gate"]["attempts"] == 2


def test_an_interrupted_attempt_ends_when_its_runner_was_last_seen(tmp_path: Path):
    """The time a crashed run lay dead is not work: the attempt the crash cut off ends at
    the dead process's last heartbeat (every 2 s), not when `resume` started."""
    marker = tmp_path / "second-time"
    slow = ("import os, sys, time\n"
            "if not os.path.exists(sys.argv[1]):\n"
            "    open(sys.argv[1], 'w').close(); time.sleep(60)\n")
    plan = {"name": "slow", "tasks": [{"id": "slow", "command": ["python", "-c", slow,
                                                                 str(marker)],
                                       "max_retries": 1, "retry_backoff_sec": 0}]}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    db = tmp_path / "runs.db"
    env = {**os.environ, "PARALLEL_AGENTS_STORE": str(db)}
    proc = subprocess.Popen([sys.executable, "-m", "parallel_agents", "run", "plan.yaml", "-q"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        killed_at = time.time()
    finally:
        proc.kill()
        proc.communicate()
    time.sleep(3)  # the run lies dead a while
    res = subprocess.run([sys.executable, "-m", "parallel_agents", "resume",
                          store_rows(db, "SELECT id FROM runs")[0][0], "--json", "-q"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    record = json.loads(res.stdout)
    first, second = record["tasks"]["slow"]["history"]
    assert first["outcome"] == "interrupted" and second["outcome"] == "succeeded"
    assert first["finished_at"] <= killed_at + 0.5
    assert first["finished_at"] - first["started_at"] < 2.5
    # Nor is it the run's makespan (nor its speedup's): 3 s of it, at least, were downtime.
    span = record["finished_at"] - record["started_at"]
    assert record["makespan_seconds"] <= span - 2.9, (record["makespan_seconds"], span)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is dead too
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_resume_from_elsewhere_runs_where_the_run_started_and_leaves_no_stragglers(
        tmp_path: Path):
    """Three things a crash must not break. Resumed from another directory, command tasks
    still run in the run's own (their relative paths mean files there); what a task's
    program started itself (a grandchild, which outlives the dead runner) is killed before
    the task runs again; and the activity log ends up with a row for every attempt, the one
    the crash cut off and those whose rows it lost included."""
    home = tmp_path / "project"
    home.mkdir()
    (home / "quick.py").write_text("print('quick')\n")
    (home / "slow.py").write_text(
        "import os, time\n"
        "if os.environ['PARALLEL_AGENTS_ATTEMPT'] == '1':\n"
        "    open('grandchild.pid', 'w').write(str(os.getpid())); time.sleep(60)\n"
        "print('slow done')\n")
    plan = {"name": "elsewhere", "tasks": [
        {"id": "quick", "command": ["python", "quick.py"]},
        # Through a shell that forks: the program of attempt 1 is the runner's grandchild.
        {"id": "slow", "command": ["sh", "-c", f"{sys.executable} slow.py; true"],
         "max_retries": 1, "retry_backoff_sec": 0},
    ]}
    (home / "plan.yaml").write_text(yaml.safe_dump(plan))
    db = tmp_path / "runs.db"
    env = {**os.environ, "PARALLEL_AGENTS_STORE": str(db)}
    proc = cli("run", "plan.yaml", "-q", cwd=home, env=env)
    pid_file = home / "grandchild.pid"
    grandchild = None
    try:
        run_id = wait_for_run(db, proc)
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text() and succeeded(db, run_id)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        grandchild = int(pid_file.read_text())
        kill(proc)
        assert _alive(grandchild)  # the runner's death did not reach it
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        res = subprocess.run([sys.executable, "-m", "parallel_agents", "resume", run_id,
                              "--json", "-q"], cwd=elsewhere, env=env, capture_output=True,
                             text=True, timeout=60)
    finally:
        if grandchild is not None and _alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)
            raise AssertionError("resume left the dead run's grandchild running")
    assert res.returncode == 0, res.stderr
    tasks = json.loads(res.stdout)["tasks"]
    assert tasks["slow"]["output"] == "slow done"
    assert [a["outcome"] for a in tasks["slow"]["history"]] == ["interrupted", "succeeded"]
    log = (Path(json.loads(res.stdout)["workspace"]) / "activity_log.md").read_text()
    rows = {tuple(c.strip() for c in line.split("|")[2:6:2])
            + (line.split("|")[5].strip(),) for line in log.splitlines()
            if line.startswith("| 2")}
    assert rows == {("quick", "1", "succeeded"), ("slow", "1", "interrupted"),
                    ("slow", "2", "succeeded")}, log


def test_an_attempt_the_user_cancelled_does_not_use_up_a_retry(tmp_path: Path):
    """Ctrl-C (or a server's shutdown) stops the run, not the task's chances: resumed, a
    task with max_retries 0 whose attempt was cancelled runs again. (A crash's interrupted
    attempt does count: the task may be what crashed the runner.)"""
    first_time = ("import os, time\n"
                  "if os.environ['PARALLEL_AGENTS_ATTEMPT'] == '1':\n"
                  "    open('started', 'w').close(); time.sleep(60)\n"
                  "print('done')\n")
    plan = {"name": "ctrl-c", "tasks": [
        {"id": "slow", "command": ["python", "-c", first_time], "max_retries": 0}]}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    env = {**os.environ, "PARALLEL_AGENTS_STORE": str(tmp_path / "runs.db")}
    proc = cli("run", "plan.yaml", "-q", cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    run_id = store_rows(tmp_path / "runs.db", "SELECT id FROM runs")[0][0]
    res = subprocess.run([sys.executable, "-m", "parallel_agents", "resume", run_id, "--json",
                          "-q"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    slow = json.loads(res.stdout)["tasks"]["slow"]
    assert [a["outcome"] for a in slow["history"]] == ["cancelled", "succeeded"]
    assert slow["output"] == "done"


def test_resume_with_rollback_undoes_what_the_interrupted_attempt_wrote(tmp_path: Path):
    """--rollback-on-failure keeps what succeeded tasks produced and nothing else, also
    across a crash: the interrupted attempt's junk and its damage to a succeeded task's file
    are undone, not taken as the resumed run's starting point."""
    ws = "$PARALLEL_AGENTS_WORKSPACE"
    plan = {"name": "rb", "tasks": [
        {"id": "a", "command": ["sh", "-c", f"echo good > {ws}/a.txt"]},
        {"id": "f", "depends_on": ["a"], "command": [
            "sh", "-c", f"echo junk > {ws}/junk.txt; echo bad > {ws}/a.txt; sleep 30; exit 1"]},
    ]}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    env = {**os.environ, "PARALLEL_AGENTS_STORE": str(tmp_path / "runs.db")}
    proc = cli("run", "plan.yaml", "-q", "--rollback-on-failure", cwd=tmp_path, env=env)
    run_id = wait_for_run(tmp_path / "runs.db", proc)
    junk = tmp_path / "runs" / run_id / "junk.txt"
    deadline = time.monotonic() + 60
    while not junk.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.2)  # a.txt is overwritten right after
    kill(proc)
    res = subprocess.run([sys.executable, "-m", "parallel_agents", "resume", run_id, "--json",
                          "-q"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 1, res.stderr  # f has no retry left: the run is partial
    record = json.loads(res.stdout)
    assert record["rollback"]["removed"] == ["junk.txt"]
    assert record["rollback"]["restored"] == ["a.txt"]
    assert not junk.exists()
    assert (tmp_path / "runs" / run_id / "a.txt").read_text() == "good\n"


def test_a_resumed_runs_makespan_is_not_shorter_than_its_critical_path(tmp_path: Path):
    """The downtime left out of a resumed run's makespan starts when the dead runner was last
    seen: its last heartbeat (every 2 s) or anything it recorded later, whichever is later.
    From the heartbeat alone, work done after it counted as downtime, and the makespan came
    out shorter than the critical path."""
    second = ("import os, time\n"
              "time.sleep(30 if os.environ['PARALLEL_AGENTS_ATTEMPT'] == '1' else 0.2)\n")
    plan = {"name": "metrics", "tasks": [
        {"id": "a", "command": ["python", "-c", "import time; time.sleep(1.2)"]},
        {"id": "b", "command": ["python", "-c", second], "depends_on": ["a"],
         "max_retries": 1, "retry_backoff_sec": 0}]}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    db = tmp_path / "runs.db"
    env = {**os.environ, "PARALLEL_AGENTS_STORE": str(db)}
    proc = cli("run", "plan.yaml", "-q", cwd=tmp_path, env=env)
    run_id = wait_for_run(db, proc)
    deadline = time.monotonic() + 60
    while not store_rows(db, "SELECT 1 FROM attempts WHERE run_id = ? AND task_id = 'b'",
                         (run_id,)):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    kill(proc)  # about 1.3 s in: its last heartbeat was at its start
    time.sleep(1)
    res = subprocess.run([sys.executable, "-m", "parallel_agents", "resume", run_id, "--json",
                          "-q"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    record = json.loads(res.stdout)
    assert record["makespan_seconds"] >= record["critical_path_seconds"] >= 1.2, record
