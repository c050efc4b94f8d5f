"""A run's workspace: the directory agents write artifacts to, its checkpoints, and the
coordination files (`scratchpad.md`, `activity_log.md`, `project_state.yaml`).

Checkpoints are content-addressed manifests, not copies of the tree: each one maps every file
to the sha256 of its content, and a blob is copied into `.checkpoints/objects/` only the first
time that content is seen. A file whose size and mtime did not change since the last
checkpoint is not even re-read, so checkpointing an unchanged workspace costs one directory
walk. The checkpoints after tasks are taken by the store's writer thread, in the round trip of
the commit that acknowledges those tasks (one walk per group commit, labelled with every task
in it), so they are taken before the tasks' dependents start: a dependent's files never leak
into its parent's checkpoint. The same thread feeds the coordination files from the committed
events (`apply_batch`); a store that takes rows one by one feeds them through this
workspace's own thread (`on_event`).

Rollback restores the last checkpoint. Because a checkpoint is taken after every task that
succeeds, the last one holds every succeeded task's artifacts; what a failed or unfinished task
wrote after it is removed ("preserve successful agents").
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Workspace", "COORDINATION_FILES", "CHECKPOINT_DIR", "blobs_after", "files_after",
           "relative_in"]

COORDINATION_FILES = ("scratchpad.md", "activity_log.md", "project_state.yaml")
CHECKPOINT_DIR = ".checkpoints"
_STATE_INTERVAL = 0.5  # seconds between rewrites of project_state.yaml under load
_LOG_INTERVAL = 0.2  # seconds between appends to activity_log.md under load
# JSON's quoting, non-ASCII kept as it is: YAML reads it the same way (the ASCII-only one
# writes characters outside the BMP as surrogate pairs, which YAML reads as two characters).
_quote = json.encoder.encode_basestring  # type: ignore[attr-defined]
_SKIPPED = frozenset({"task_queued", "task_progress"})
_TERMINAL = {"task_succeeded": "succeeded", "task_failed": "failed", "task_skipped": "skipped",
             "task_cancelled": "cancelled"}


class Workspace:
    """One run's workspace directory. Feed it events with `on_event`; `close()` at the end."""

    def __init__(self, root: Path, *, run_id: str, plan: Any, strategy: str) -> None:
        self.root = Path(root)
        self.run_id = run_id
        self.plan = plan
        self.strategy = strategy
        self.ckpt_dir = self.root / CHECKPOINT_DIR
        self.objects = self.ckpt_dir / "objects"
        self.root.mkdir(parents=True, exist_ok=True)
        self.objects.mkdir(parents=True, exist_ok=True)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        # Thread-owned state below.
        self._seq = max((int(p.stem) for p in self.ckpt_dir.glob("*.json") if p.stem.isdigit()),
                        default=0)
        self._last: dict[str, list[Any]] = self._read_manifest(self._seq)
        self._status = {t.id: "pending" for t in plan.tasks}
        self._attempts = {t.id: 0 for t in plan.tasks}
        self._started: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()  # one checkpoint at a time, from any thread
        self._run_status = "running"
        self._state_written = 0.0
        self._interval = _STATE_INTERVAL
        self._log_lines: list[str] = []
        self._log_written = 0.0
        self._state_dirty = False
        self._closed = False
        # Guards the coordination-file state: events come either through the worker thread
        # (`on_event`) or straight from the store's writer thread (`apply_batch`).
        self._state_lock = threading.Lock()
        self._quoted: list[tuple[str, str, str]] = []
        self._log_fh: Any = None
        self._labels_fh: Any = None  # (seq, handle) of the last checkpoint's .labels file
        self._stamp_second = -1
        self._stamp = ""
        scratch = self.root / "scratchpad.md"
        if not scratch.exists():
            scratch.write_text(f"# Scratchpad for run {run_id}\n\nShared notes: agents may "
                               "append here.\n\n", encoding="utf-8")
        log = self.root / "activity_log.md"
        if not log.exists():
            log.write_text(f"# Activity log for run {run_id}\n\n"
                           "| time (UTC) | task | pool | attempt | status | duration (s) |\n"
                           "|---|---|---|---|---|---|\n", encoding="utf-8")

    # -- the caller's side ---------------------------------------------------------------
    def restore_state(self, statuses: dict[str, str], attempts: dict[str, int]) -> None:
        """On resume: start from the stored statuses rather than all-pending."""
        self._status.update(statuses)
        self._attempts.update(attempts)

    def log_history(self, history: dict[str, list[Any]], cached: set[str]) -> int:
        """On resume: add the activity log's missing rows for attempts that ended before
        (`AttemptRecord`s per task). A crash loses the rows still held back, and attempts
        it cut off (`interrupted`) never had an event; both are in the store. Returns how
        many rows were added."""
        log = self.root / "activity_log.md"
        have: set[tuple[str, str]] = set()
        try:
            for line in log.read_text(encoding="utf-8").splitlines():
                cells = line.split(" | ")
                if len(cells) == 6:
                    have.add((cells[1].replace("\\|", "|"), cells[3]))
        except OSError:
            pass  # no log yet: every ended attempt gets its row
        rows = []
        for tid, records in history.items():
            for r in records:
                if r.finished_at is None or r.outcome == "running" or (tid, str(r.attempt)) in have:
                    continue
                status = r.outcome
                if status == "succeeded" and tid in cached:
                    status = "succeeded (cached)"
                rows.append((r.finished_at, tid, r.attempt, status,
                             max(0.0, r.finished_at - r.started_at)))
        if not rows:
            return 0
        rows.sort()
        with self._state_lock:
            for at, tid, attempt, status, duration in rows:
                self._log(at, {"duration": duration}, tid, attempt, status)
            self._flush_log(force=True)
        return len(rows)

    def extend(self, plan: Any) -> None:
        """The plan grew (streaming planning): its new tasks start out pending."""
        with self._state_lock:
            self.plan = plan
            for t in plan.tasks:
                self._status.setdefault(t.id, "pending")
                self._attempts.setdefault(t.id, 0)
            self._state_dirty = True

    def start(self, label: str) -> None:
        """Take the checkpoint before the run (synchronously) and start the worker thread.

        It is also labelled `run:RUN_ID`: runs may share a workspace, and the checkpoints
        after this one (until the next `run:` label) are this run's (see `blobs_after`)."""
        self._checkpoint([label, f"run:{self.run_id}"])
        self._write_state(force=True)
        self._thread = threading.Thread(target=self._loop, name="parallel-agents-workspace",
                                        daemon=True)
        self._thread.start()

    def on_event(self, event: Any) -> None:
        self._queue.put(("event", event))

    def apply_batch(self, entries: list[Any]) -> None:
        """Update the coordination files from the events of one group commit, in event
        order: the store's writer thread calls this once the commit is done (no queue, no
        extra thread wake-up). Each entry is a list of rows (kind, task_id, attempt, time,
        message, data), or a group (first_seq, kind, time, task_ids, attempts, datas) of
        events of one kind (see `RunBatch`)."""
        with self._state_lock:
            apply = self._apply_fields
            for entry in entries:
                if type(entry) is list:
                    for kind, tid, attempt, at, _message, data in entry:
                        if kind not in _SKIPPED:
                            apply(kind, tid, attempt, at, data)
                    continue
                _, kind, at, tids, attempts, datas = entry
                if kind in _SKIPPED:
                    continue
                if kind == "task_started" and attempts is not None:
                    # `_apply_fields`' task_started branch, inlined: a group has 10^3-10^4
                    # tasks and this runs on the writer thread, holding the GIL.
                    status, started, counts = self._status, self._started, self._attempts
                    for tid, attempt in zip(tids, attempts):
                        started[(tid, attempt)] = at
                        status[tid] = "running"
                        if attempt > counts.get(tid, 0):
                            counts[tid] = attempt
                    self._state_dirty = True
                    continue
                for i, tid in enumerate(tids):
                    apply(kind, tid, attempts[i] if attempts is not None else None, at,
                          datas[i] if datas is not None else None)
            self._write_files(force=False)

    def _write_files(self, *, force: bool) -> None:
        """Append the log rows and rewrite the state file: now if `force`, else as their
        rate limits allow. A failed write (a full disk, the workspace deleted) must not stop
        the store's writer thread, whose commits the run waits for: it is kept, like a
        checkpoint's, and the rows stay held for the next try."""
        try:
            self._flush_log(force=force)
            self._write_state(force=force and self._state_dirty)
        except OSError as exc:
            self._error = exc

    def pending(self) -> bool:
        """Whether log rows or a state rewrite are held back (see `flush_pending`)."""
        return not self._closed and (bool(self._log_lines) or self._state_dirty)

    def flush_pending(self, *, force: bool = True) -> None:
        """Write what the rate limits held back: all of it (`force`, once the store's queue
        goes quiet), or what is due (after another run's batch: a busy store may never go
        quiet). A long task must not leave the files a batch behind until its run's next
        batch comes, which may be minutes."""
        with self._state_lock:
            if not self._closed:
                self._write_files(force=force)

    def checkpoint_now(self, labels: list[str]) -> None:
        """Take a checkpoint on the caller's thread (rare ones: stage boundaries)."""
        self._safe_checkpoint(labels)

    def close(self, status: str, *, rollback: bool) -> dict[str, Any] | None:
        """Finish pending work; restore the last checkpoint if asked. Blocks (call off-loop)."""
        done = threading.Event()
        box: dict[str, Any] = {}
        self._queue.put(("close", status, rollback, done, box))
        done.wait()
        if self._thread is not None:
            self._thread.join(timeout=30)
        return box.get("rollback")

    # -- the worker thread ---------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            try:
                items = [self._queue.get(timeout=_LOG_INTERVAL if self.pending() else None)]
            except queue.Empty:
                self.flush_pending()
                continue
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            with self._state_lock:
                if self._work(items):
                    return

    def _work(self, items: list[Any]) -> bool:
        """Handle the worker's items; True once `close` was handled."""
        for item in items:
            if item[0] == "event":
                self._apply(item[1])
            else:
                _, status, rollback, done, box = item
                try:
                    self._flush_log(force=True)
                    self._run_status = status
                    if rollback and status != "succeeded":
                        box["rollback"] = self.rollback()
                    self._write_state(force=True)
                except Exception as exc:  # noqa: BLE001 - reported by the caller
                    box["error"] = f"{type(exc).__name__}: {exc}"
                finally:
                    self._closed = True
                    self._close_handles()
                done.set()
                return True
        self._flush_log()
        self._write_state()
        return False

    def _apply(self, event: Any) -> None:
        """Update the coordination files' state from one event."""
        self._apply_fields(event.kind, event.task_id, event.attempt, event.time, event.data)

    def _apply_fields(self, kind: str, tid: Any, attempt: int | None, at: float,
                      data: dict[str, Any] | None) -> None:
        if kind == "task_started":
            self._started[(tid, attempt)] = at
            self._status[tid] = "running"
            self._attempts[tid] = max(self._attempts.get(tid, 0), attempt or 0)
        elif kind == "task_queued":
            self._status[tid] = "queued"
        elif kind == "task_retrying":
            self._status[tid] = "retrying"
            self._log(at, data, tid, (attempt or 1) - 1, "failed (will retry)")
        elif kind in _TERMINAL:
            self._status[tid] = _TERMINAL[kind]
            # A success the crash left without its event: resume's `log_history` logs it
            # from the store if the crash lost its row too.
            if kind != "task_skipped" and not (data or {}).get("recovered"):
                cached = bool((data or {}).get("cached"))
                status = "succeeded (cached)" if cached else _TERMINAL[kind]
                self._log(at, data, tid, attempt or self._attempts.get(tid, 0), status)
        self._state_dirty = True

    def _log(self, at: float, data: dict[str, Any] | None, tid: str, attempt: int,
             status: str) -> None:
        start = self._started.pop((tid, attempt), None)
        duration = (data or {}).get("duration")
        if duration is None:
            duration = max(0.0, at - start) if start is not None else 0.0
        pool = self.plan.task(tid).pool
        if "|" in tid or "|" in pool:  # a table cell: escaped as markdown tables do
            tid, pool = tid.replace("|", "\\|"), pool.replace("|", "\\|")
        second = int(at)
        if second != self._stamp_second:
            self._stamp_second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))
        stamp = self._stamp
        self._log_lines.append(
            f"| {stamp} | {tid} | {pool} | {attempt} | {status} | {duration:.3f} |\n")
        self._state_dirty = True

    def _flush_log(self, force: bool = False) -> None:
        if self._log_lines:
            # At most every _LOG_INTERVAL under load: each write is a system call, and a
            # system call is a wait for the GIL for the store's writer thread, which calls
            # this after each group commit (up to a switch interval, 5 ms, while the event
            # loop is busy).
            now = time.monotonic()
            if not force and now - self._log_written < _LOG_INTERVAL:
                return
            self._log_written = now
            # One handle for the run (opening the file per batch cost more than the write).
            fh = self._log_fh
            if fh is None:
                fh = self._log_fh = open(self.root / "activity_log.md", "a", encoding="utf-8")
            fh.write("".join(self._log_lines))
            fh.flush()
            self._log_lines.clear()

    def _close_handles(self) -> None:
        with self._lock:
            self._close_handles_locked()

    def _close_handles_locked(self) -> None:
        for name in ("_log_fh", "_labels_fh"):
            handle = getattr(self, name)
            setattr(self, name, None)
            if handle is not None:
                try:
                    (handle[1] if isinstance(handle, tuple) else handle).close()
                except OSError:
                    pass  # the log is flushed when written; at worst the last labels are lost

    def _write_state(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (not self._state_dirty or now - self._state_written < self._interval):
            return
        counts: dict[str, int] = {}
        for s in self._status.values():
            counts[s] = counts.get(s, 0) + 1
        header = {
            "run_id": self.run_id,
            "plan": self.plan.name,
            "status": self._run_status,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "checkpoint": self._seq,
            "counts": counts,
        }
        # One flow mapping per task, written by hand: a YAML emitter takes ~0.4 s for 10,000
        # tasks, this takes ~20 ms, and the file stays valid YAML (`yaml.safe_load` reads it).
        lines = [yaml.safe_dump(header, sort_keys=False), "tasks:\n"]
        quoted = self._quoted
        if len(quoted) != len(self.plan.tasks):
            # The quoted id and pool of each task, computed once (not at every rewrite).
            # (the C string quoter: json.dumps per id cost ~1 µs a task on big plans)
            quote = _quote
            quoted = self._quoted = [(t.id, f"  {quote(t.id)}: {{status: ",
                                      f", pool: {quote(t.pool)}, attempts: ")
                                     for t in self.plan.tasks]
        status, attempts = self._status, self._attempts
        for tid, head, middle in quoted:
            lines.append(f"{head}{status[tid]}{middle}{attempts.get(tid, 0)}}}\n")
        tmp = self.root / ".project_state.yaml.tmp"
        tmp.write_text("".join(lines), encoding="utf-8")
        os.replace(tmp, self.root / "project_state.yaml")
        spent = time.monotonic() - now
        # Keep rewriting cheap relative to the run however large the plan is.
        self._interval = max(_STATE_INTERVAL, 20 * spent)
        self._state_written = time.monotonic()
        self._state_dirty = False

    # -- checkpoints ---------------------------------------------------------------------
    def _safe_checkpoint(self, labels: list[str]) -> None:
        try:
            self._checkpoint(labels)
        except OSError as exc:
            # A checkpoint that cannot be taken must not stop the run; the next one retries.
            self._error = exc

    def _checkpoint(self, labels: list[str]) -> int:
        with self._lock:
            return self._checkpoint_locked(labels)

    def _scan(self) -> list[tuple[str, str]]:
        """(relative posix path, absolute path) of every workspace file, coordination files
        and checkpoints left out. Scandir and strings: it runs once per group commit."""
        out: list[tuple[str, str]] = []
        stack = [(os.fspath(self.root), "")]
        while stack:
            here, prefix = stack.pop()
            try:
                entries = list(os.scandir(here))
            except OSError:
                continue
            for entry in entries:
                name = entry.name
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    # Like os.walk: a symlink to a directory is neither walked nor a file.
                    if not (prefix == "" and name == CHECKPOINT_DIR) and not entry.is_symlink():
                        stack.append((entry.path, f"{prefix}{name}/"))
                elif prefix or not (name in COORDINATION_FILES
                                    or name.startswith(".project_state")):
                    out.append((f"{prefix}{name}", entry.path))
        return out

    def _checkpoint_locked(self, labels: list[str]) -> int:
        manifest: dict[str, list[Any]] = {}
        for rel, path_str in self._scan():
            path = Path(path_str)
            try:
                st = os.stat(path_str)
            except FileNotFoundError:
                continue  # deleted while we walked
            prev = self._last.get(rel)
            if prev is not None and prev[1] == st.st_size and prev[2] == st.st_mtime_ns:
                manifest[rel] = prev
                continue
            digest = self._store_blob(path)
            if digest is not None:
                manifest[rel] = [digest, st.st_size, st.st_mtime_ns]
        if manifest == self._last and self._seq > 0:
            # Nothing changed: the previous checkpoint still describes the workspace; just
            # note that it also stands for these labels (a tiny append, no manifest rewrite).
            held = self._labels_fh
            if held is None or held[0] != self._seq:
                if held is not None:
                    held[1].close()
                held = self._labels_fh = (self._seq, open(
                    self.ckpt_dir / f"{self._seq:06d}.labels", "a", encoding="utf-8"))
            # Buffered, not flushed (a system call per group commit, see _flush_log): the
            # labels reach the file when the buffer fills or the checkpoint changes or the
            # run ends. A crash may lose the last ones; the manifest they name is on disk.
            held[1].write("".join(f"{label}\n" for label in labels))
            return self._seq
        self._seq += 1
        record = {"seq": self._seq, "labels": labels, "time": time.time(), "files": manifest}
        tmp = self.ckpt_dir / f".{self._seq:06d}.tmp"
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, self.ckpt_dir / f"{self._seq:06d}.json")
        self._last = manifest
        return self._seq

    def _store_blob(self, path: Path) -> str | None:
        h = hashlib.sha256()
        try:
            with path.open("rb") as fh:
                data = fh.read()
        except OSError:
            return None
        h.update(data)
        digest = h.hexdigest()
        blob = self.objects / digest[:2] / digest
        if not blob.exists():
            blob.parent.mkdir(exist_ok=True)
            tmp = blob.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, blob)
        return digest

    def _read_manifest(self, seq: int) -> dict[str, list[Any]]:
        if seq == 0:
            return {}
        try:
            return json.loads((self.ckpt_dir / f"{seq:06d}.json").read_text("utf-8"))["files"]
        except (OSError, ValueError, KeyError):
            return {}

    def checkpoints(self) -> list[dict[str, Any]]:
        return [{"seq": data["seq"], "labels": labels, "time": data["time"],
                 "files": len(data["files"])} for data, labels in _manifests(self.ckpt_dir)]

    def rollback(self) -> dict[str, Any]:
        """Make the workspace match the last checkpoint: remove newer files, restore changed."""
        manifest = self._read_manifest(self._seq)
        removed, restored = [], []
        for rel, path_str in self._scan():
            if rel not in manifest:
                Path(path_str).unlink(missing_ok=True)
                removed.append(rel)
        for rel, (digest, size, _mtime) in manifest.items():
            target = self.root / rel
            try:
                same = target.stat().st_size == size and _sha256(target) == digest
            except FileNotFoundError:
                same = False
            if not same:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.objects / digest[:2] / digest, target)
                restored.append(rel)
        for dirpath, dirnames, filenames in os.walk(self.root, topdown=False):
            here = Path(dirpath)
            if here != self.root and CHECKPOINT_DIR not in here.relative_to(self.root).parts:
                if not any(here.iterdir()):
                    here.rmdir()
        self._last = self._read_manifest(self._seq)
        return {"checkpoint": self._seq, "removed": sorted(removed), "restored": sorted(restored)}


def blobs_after(root: Path, task_id: str, paths: list[str],
                run_id: str | None = None) -> dict[str, bytes]:
    """The content of `paths` (relative to the workspace `root`) as the checkpoint taken
    after `task_id` holds them: what the task left, even if a later task overwrote a file.

    `run_id`: the run whose task it was (runs may share a workspace: only the checkpoints
    from that run's `run:RUN_ID` label to the next run's count). A path the checkpoint
    lacks is left out; so is everything if no checkpoint names the task (a workspace from
    before checkpoints, or one that was deleted)."""
    ckpt_dir = Path(root) / CHECKPOINT_DIR
    label = f"after:{task_id}"
    found: dict[str, list[Any]] | None = None
    anywhere: dict[str, list[Any]] | None = None  # ignoring runs: for workspaces from before
    marked = False  # run: labels, which workspaces written before them lack
    in_run = run_id is None
    for record, labels in _manifests(ckpt_dir):
        for given in labels:
            if given.startswith("run:") and run_id is not None:
                marked = True
                in_run = given == f"run:{run_id}"
            elif given == label:
                anywhere = anywhere if anywhere is not None else record.get("files") or {}
                if in_run:
                    found = record.get("files") or {}
    if not marked:
        found = anywhere
    out: dict[str, bytes] = {}
    if found is None:
        return out
    for rel in paths:
        entry = found.get(rel)
        if not entry:
            continue
        digest = entry[0]
        try:
            out[rel] = (ckpt_dir / "objects" / digest[:2] / digest).read_bytes()
        except OSError:
            continue
    return out


def _manifests(ckpt_dir: Path) -> Iterator[tuple[dict[str, Any], list[str]]]:
    """Each checkpoint (its manifest, its labels), oldest first. The labels come in the
    order they were given: a manifest's own, then those appended to its .labels file while
    it stayed the latest, then the next manifest's. An unreadable manifest is skipped."""
    for manifest_path in sorted(ckpt_dir.glob("*.json")):
        try:
            record = json.loads(manifest_path.read_text("utf-8"))
            labels = list(record.get("labels") or [])
            extra = manifest_path.with_suffix(".labels")
            if extra.exists():
                labels += extra.read_text("utf-8").split()
        except (OSError, ValueError):
            continue
        yield record, labels


def relative_in(root: Path | None, name: str) -> str | None:
    """A file an agent reported (absolute, or relative to the workspace `root`) as a path
    relative to `root`; None if it lies outside."""
    path = Path(name)
    if path.is_absolute():
        if root is None:
            return None
        try:
            path = path.resolve().relative_to(Path(root).resolve())
        except (OSError, ValueError):
            return None
    if ".." in path.parts:
        return None
    return path.as_posix()


def files_after(root: Path, task_id: str, paths: list[str],
                run_id: str | None = None) -> dict[str, str]:
    """`blobs_after` as text; a file whose content is not UTF-8 is left out."""
    out: dict[str, str] = {}
    for rel, data in blobs_after(root, task_id, paths, run_id).items():
        try:
            out[rel] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
