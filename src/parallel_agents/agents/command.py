"""`command` tasks: an external program, run without a shell, in its own process group.

The program reads `{"task": {...}, "inputs": {dep_id: output}}` as JSON on stdin, finds
PARALLEL_AGENTS_RUN_ID / _TASK_ID / _ATTEMPT in its environment, writes its output to stdout
and exits 0 on success. On timeout or cancel, and when the program exits, the whole process
group is killed: a task never leaves processes behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

from .._exceptions import NonRetryableError, TaskError
from . import Agent, TaskContext

__all__ = ["CommandAgent", "kill_leftovers"]

_STDERR_TAIL = 2000


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGKILL the program if the runner dies (kill -9), so a crashed run leaves no
    agent behind spending money or writing files while `resume` starts it again."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# How the program gets its parent-death signal. A `preexec_fn` makes Python fork the whole
# runner (no vfork) and run Python in the child: 4-20 ms per task on the event loop, growing
# with the runner's memory, which is what a server with hundreds of command tasks at once
# spent its time on. util-linux's `setpriv --pdeathsig KILL -- PROGRAM` sets the same signal
# and execs the program in place, so the runner can vfork (~0.5 ms). Checked once.
_SETPRIV: list[str | None] = []


def _setpriv() -> str | None:
    if not _SETPRIV:
        path = shutil.which("setpriv") if sys.platform.startswith("linux") else None
        if path is not None:
            try:
                ok = subprocess.run([path, "--pdeathsig", "KILL", "--", "true"],
                                    capture_output=True, timeout=10).returncode == 0
            except (OSError, subprocess.SubprocessError):
                ok = False
            path = path if ok else None
        _SETPRIV.append(path)
    return _SETPRIV[0]


def _program(argv0: str, env: dict[str, str], cwd: str | None) -> str:
    """The program's path, as exec would find it with the task's PATH (a relative path from
    `cwd`); the errors a failed exec would have given, raised here (the program is started
    through `setpriv`)."""
    if os.sep in argv0:
        path = os.path.join(cwd, argv0) if cwd is not None else argv0
        if not os.path.exists(path):
            raise FileNotFoundError(argv0)
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise PermissionError(argv0)
        return path
    found = shutil.which(argv0, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(argv0)
    return found


def kill_leftovers(run_id: str) -> int:
    """Kill what a dead runner's command tasks left running; returns how many processes.

    A task's program dies with its runner (its parent-death signal), but what the program
    started itself (`sh -c "agent; ..."`: the agent) is another process, reparented when the
    runner dies, and would go on writing files while `resume` starts the task again. Every
    process a task starts inherits PARALLEL_AGENTS_RUN_ID, so they are found by it (Linux:
    /proc; elsewhere nothing is done). Only for a run whose runner is dead: the caller holds
    its lease.
    """
    proc = "/proc"
    if not os.path.isdir(proc):
        return 0
    mark = f"PARALLEL_AGENTS_RUN_ID={run_id}".encode()
    me = os.getpid()
    found = []
    for name in os.listdir(proc):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"{proc}/{name}/environ", "rb") as fh:
                environ = fh.read().split(b"\0")
        except OSError:
            continue  # gone, or another user's
        if mark in environ:
            found.append(int(name))
    for pid in found:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(found)


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class CommandAgent(Agent):
    """Runs `task.command`. `python`/`python3` as the program means this interpreter.

    `kill_grace_sec`: after SIGTERM on timeout/cancel, how long the group gets before SIGKILL.
    `drop_env`: variables of the runner's environment the program must not inherit (the HTTP
    server drops its own token, so a task cannot read it); a task's own `env` still applies.
    """

    def __init__(self, *, kill_grace_sec: float = 1.0, drop_env: Iterable[str] = ()) -> None:
        self.kill_grace_sec = kill_grace_sec
        self.drop_env = frozenset(drop_env)

    async def run(self, task: Any, ctx: TaskContext) -> str:
        argv = list(task.command)
        if argv[0] in ("python", "python3"):
            # The interpreter running parallel-agents, so a plan works the same in a venv.
            argv[0] = sys.executable
        env = {k: v for k, v in os.environ.items() if k not in self.drop_env}
        env.update(task.env)
        env["PARALLEL_AGENTS_RUN_ID"] = ctx.run_id
        env["PARALLEL_AGENTS_TASK_ID"] = task.id
        env["PARALLEL_AGENTS_ATTEMPT"] = str(ctx.attempt)
        if ctx.workspace is not None:
            env["PARALLEL_AGENTS_WORKSPACE"] = str(ctx.workspace)
        payload = json.dumps(
            {"task": task.describe(), "inputs": ctx.inputs, "run_id": ctx.run_id,
             "attempt": ctx.attempt},
            default=str,
        ).encode()
        cwd = str(ctx.cwd) if ctx.cwd is not None else None
        try:
            setpriv = _setpriv()
            if setpriv is not None:
                launch = [setpriv, "--pdeathsig", "KILL", "--", _program(argv[0], env, cwd),
                          *argv[1:]]
                preexec = None
            else:
                launch = argv
                preexec = _die_with_parent if sys.platform.startswith("linux") else None
            proc = await asyncio.create_subprocess_exec(
                *launch,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=cwd,
                start_new_session=True,  # its own session, hence its own process group
                preexec_fn=preexec,
            )
        except FileNotFoundError:
            raise NonRetryableError(
                f"program not found: {argv[0]!r}. Check the task's command, or that the "
                f"program is installed and on PATH"
            ) from None
        except PermissionError:
            raise NonRetryableError(
                f"program is not executable: {argv[0]!r}. Check its permissions (chmod +x)"
            ) from None
        except OSError as exc:
            raise NonRetryableError(f"cannot start {argv[0]!r}: {exc}") from None

        pgid = proc.pid
        try:
            stdout, stderr = await self._communicate(proc, payload)
        except BaseException:
            # Timeout or cancel: stop the whole group, politely first.
            await asyncio.shield(self._terminate(proc, pgid))
            raise
        finally:
            # Whatever the program left running in its group goes too: no orphans.
            _kill_group(pgid, signal.SIGKILL)

        code = proc.returncode
        if code != 0:
            tail = stderr.decode("utf-8", "replace").strip()[-_STDERR_TAIL:]
            if code is not None and code < 0:
                try:
                    what = f"killed by signal {signal.Signals(-code).name}"
                except ValueError:
                    what = f"killed by signal {-code}"
            else:
                what = f"exit code {code}"
            raise TaskError(f"{what}" + (f": {tail}" if tail else " (no stderr)"))
        return stdout.decode("utf-8", "replace").rstrip("\n")

    async def _communicate(self, proc: asyncio.subprocess.Process, payload: bytes) -> tuple[bytes, bytes]:
        async def feed() -> None:
            assert proc.stdin is not None
            try:
                proc.stdin.write(payload)
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the program does not read stdin: fine
            finally:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    proc.stdin.close()

        assert proc.stdout is not None and proc.stderr is not None
        writer = asyncio.ensure_future(feed())
        out = asyncio.ensure_future(proc.stdout.read())
        err = asyncio.ensure_future(proc.stderr.read())
        try:
            await proc.wait()
            # The leader is gone; children still holding the pipes would block EOF forever.
            _kill_group(proc.pid, signal.SIGKILL)
            stdout, stderr, _ = await asyncio.gather(out, err, writer)
            return stdout, stderr
        except BaseException:
            for fut in (writer, out, err):
                fut.cancel()
            raise

    async def _terminate(self, proc: asyncio.subprocess.Process, pgid: int) -> None:
        _kill_group(pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.kill_grace_sec)
        except asyncio.TimeoutError:
            pass
        _kill_group(pgid, signal.SIGKILL)
        with contextlib.suppress(asyncio.TimeoutError, ProcessLookupError):
            await asyncio.wait_for(proc.wait(), 5.0)
