"""Merge the agents' results into one workspace and settle their conflicts by rules.

Three kinds of conflict are detected, each with a rule that resolves it (the seeds' rules:
security recommendations always apply; complementary advice merges; the coordinator decides
what is irreconcilable and says why):

- `same_file`: two tasks wrote the same path with different contents. A task that depends on
  the other built on its work and wins; otherwise the role that owns the file type wins (SQL
  -> database, HTML/CSS/JS -> frontend, ...); otherwise the higher priority, then the later
  task. Text documents (markdown, plain text) are complementary: both versions are merged.
  The losing version is kept under `.coordinator/conflicts/TASK/PATH`, never lost.
- `security_unaddressed`: a security task names a risk (CSRF, XSS, SQL injection, rate
  limiting, password hashing, input validation) and no code file shows its mitigation. The
  recommendation applies: it is written to `SECURITY_REQUIREMENTS.md` as a required change
  and the final response says plainly that the code does not have it yet.
- `contradiction`: tasks chose different options for the same subject (database engine,
  backend framework, frontend framework). The subject's owner role decides; without one,
  the coordinator takes the majority, then the higher-priority task, with the rationale.

Detection is keyword based on purpose: every conflict can be explained in one sentence.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..results import RunResult
from ..store.workspace import relative_in

__all__ = ["Conflict", "Aggregation", "aggregate", "SECURITY_TOPICS", "SUBJECTS"]

CONFLICTS_DIR = ".coordinator/conflicts"
SECURITY_FILE = "SECURITY_REQUIREMENTS.md"
_TEXT_DOCS = (".md", ".txt", ".rst")
_CODE_EXT = (".py", ".js", ".ts", ".tsx", ".jsx", ".go", ".rs", ".java", ".rb", ".php",
             ".html", ".htm", ".sql", ".cs", ".c", ".cpp", ".kt", ".swift", ".vue", ".svelte",
             ".yaml", ".yml", ".toml", ".json", ".conf", ".ini", ".env", ".sh")


@dataclass(slots=True)
class Conflict:
    """A conflict between agents and how the coordinator resolved it."""

    kind: str  # same_file | security_unaddressed | contradiction
    subject: str  # the path, the risk, or the subject of the choice
    tasks: list[str]
    details: str
    resolution: str
    rationale: str
    winner: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "subject": self.subject, "tasks": self.tasks,
                "details": self.details, "resolution": self.resolution,
                "rationale": self.rationale, "winner": self.winner}


@dataclass(slots=True)
class Aggregation:
    workspace: Path | None
    files: dict[str, list[str]]  # path -> tasks that wrote it (the final owner last)
    outputs: dict[str, str]  # task id -> its output as text
    conflicts: list[Conflict] = field(default_factory=list)
    security_requirements: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"workspace": str(self.workspace) if self.workspace else None,
                "files": self.files, "conflicts": [c.to_dict() for c in self.conflicts],
                "security_requirements": self.security_requirements}


# -- helpers -----------------------------------------------------------------------------
def output_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _ancestors(tasks: dict[str, dict[str, Any]], task_id: str) -> set[str]:
    seen: set[str] = set()
    stack = list(tasks.get(task_id, {}).get("depends_on", []))
    while stack:
        t = stack.pop()
        if t not in seen:
            seen.add(t)
            stack.extend(tasks.get(t, {}).get("depends_on", []))
    return seen


_OWNER_BY_EXT = {
    ".sql": "database", ".html": "frontend", ".htm": "frontend", ".css": "frontend",
    ".js": "frontend", ".jsx": "frontend", ".tsx": "frontend", ".vue": "frontend",
    ".svelte": "frontend", ".py": "backend", ".go": "backend", ".rb": "backend",
    ".php": "backend", ".java": "backend", ".rs": "backend", ".md": "docs",
}


def _read(path: Path, limit: int = 1_000_000) -> str | None:
    try:
        data = path.read_bytes()[:limit]
    except OSError:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


# -- same file ---------------------------------------------------------------------------
def _same_file_conflicts(
    specs: dict[str, dict[str, Any]], writers: dict[str, list[str]],
    snapshots: dict[str, dict[str, str]], workspace: Path | None,
) -> list[Conflict]:
    out = []
    for path, tasks in writers.items():
        if len(tasks) < 2:
            continue
        versions = {t: snapshots.get(t, {}).get(path) for t in tasks}
        known = {t: v for t, v in versions.items() if v is not None}
        distinct = set(known.values())
        if known and len(distinct) == 1 and len(known) == len(tasks):
            out.append(Conflict("same_file", path, tasks,
                                f"{' and '.join(tasks)} wrote {path} with identical content",
                                "kept once", "identical content: nothing to decide",
                                winner=tasks[-1]))
            continue
        suffix = Path(path).suffix.lower()
        if suffix in _TEXT_DOCS and len(known) == len(tasks) and workspace is not None:
            merged = "\n\n".join(f"<!-- from task {t} -->\n{known[t].rstrip()}" for t in tasks)
            (workspace / path).write_text(merged + "\n", encoding="utf-8")
            out.append(Conflict("same_file", path, tasks,
                                f"{' and '.join(tasks)} wrote different versions of {path}",
                                "merged both versions into the file, each under its task's "
                                "marker", "complementary advice merges: a text document loses "
                                "nothing by holding both", winner=None))
            continue
        winner, rationale = _pick_writer(specs, tasks, path)
        resolution = f"kept {winner}'s version"
        if workspace is not None:
            if winner in known:
                (workspace / path).parent.mkdir(parents=True, exist_ok=True)
                (workspace / path).write_text(known[winner], encoding="utf-8")
            kept = []
            for t in tasks:
                if t != winner and t in known:
                    alt = workspace / CONFLICTS_DIR / t / path
                    alt.parent.mkdir(parents=True, exist_ok=True)
                    alt.write_text(known[t], encoding="utf-8")
                    kept.append(f"{CONFLICTS_DIR}/{t}/{path}")
            if kept:
                resolution += "; the other version(s) kept at " + ", ".join(kept)
        out.append(Conflict("same_file", path, tasks,
                            f"{' and '.join(tasks)} wrote different versions of {path}",
                            resolution, rationale, winner=winner))
    return out


def _pick_writer(specs: dict[str, dict[str, Any]], tasks: list[str], path: str
                 ) -> tuple[str, str]:
    for t in tasks:
        others = [o for o in tasks if o != t]
        if all(o in _ancestors(specs, t) for o in others):
            return t, (f"{t} depends on {', '.join(others)}: it built on that work, so its "
                       "version is the newer one")
    owner = _OWNER_BY_EXT.get(Path(path).suffix.lower())
    owners = [t for t in tasks if specs.get(t, {}).get("agent") == owner]
    if owner and len(owners) == 1:
        return owners[0], f"{Path(path).suffix} files belong to the {owner} role"
    ranked = sorted(tasks, key=lambda t: (specs.get(t, {}).get("priority", 5),
                                          tasks.index(t)))
    top = ranked[-1]
    pr = specs.get(top, {}).get("priority", 5)
    if sum(1 for t in tasks if specs.get(t, {}).get("priority", 5) == pr) == 1:
        return top, f"no dependency or owner decides: {top} has the highest priority ({pr})"
    return tasks[-1], (f"irreconcilable, the coordinator decides: {tasks[-1]} finished last, "
                       "so its version is what the workspace holds")


# -- security ----------------------------------------------------------------------------
#: risk -> (words in a security finding, words in code that show the mitigation, the fix)
SECURITY_TOPICS: dict[str, tuple[str, str, str]] = {
    "CSRF": (r"csrf|xsrf|cross[- ]site request forgery",
             r"csrf|xsrf|samesite",
             "add CSRF tokens to every state-changing form/request (and SameSite cookies)"),
    "XSS": (r"\bxss\b|cross[- ]site scripting",
            r"escape|sanitiz|textContent|DOMPurify|Content-Security-Policy|autoescape|bleach|"
            r"markupsafe",
            "escape or sanitise all user-supplied output; set a Content-Security-Policy"),
    "SQL injection": (r"sql[- ]?injection|\bsqli\b",
                      r"parameteri[sz]|prepared statement|placeholder|execute\([^)\n]*,\s*[\[(]|"
                      r"\?\s*[,)]|%s|bindparam|sqlalchemy|\$\d",
                      "use parameterised queries everywhere, never string-built SQL"),
    "rate limiting": (r"rate[- ]?limit|throttl|brute[- ]?force",
                      r"rate[-_ ]?limit|throttl|limiter|slowapi|too many requests|\b429\b",
                      "rate-limit the login and booking endpoints"),
    "password hashing": (r"(?:hash|bcrypt|argon|scrypt)\w*[^.\n]{0,40}password|"
                         r"password[^.\n]{0,40}(?:hash|bcrypt|argon|scrypt|plain ?text)",
                         r"bcrypt|argon2|scrypt|pbkdf2|password_hash|generate_password_hash|"
                         r"passlib|hashlib",
                         "store passwords only as slow salted hashes (bcrypt/argon2)"),
    "input validation": (r"input validation|validate (?:all )?(?:user )?input|"
                         r"unvalidated input",
                         r"validat|pydantic|schema|required|maxlength|pattern=",
                         "validate every input (types, lengths, formats) on the server"),
}


def _security_conflicts(
    specs: dict[str, dict[str, Any]], outputs: dict[str, str],
    contents: dict[str, dict[str, str]],
) -> tuple[list[Conflict], list[str]]:
    security_tasks = [t for t, s in specs.items() if s.get("agent") == "security"
                      or s.get("pool") == "security"]
    code: dict[str, str] = {}  # "task:path" -> content, from the non-security tasks
    for t, files in contents.items():
        if t in security_tasks:
            continue
        for path, text in files.items():
            if Path(path).suffix.lower() in _CODE_EXT:
                code[f"{t}:{path}"] = text
    coders = [t for t, s in specs.items() if t not in security_tasks
              and s.get("agent") in ("backend", "frontend", "codegen", "database")]
    out: list[Conflict] = []
    requirements: list[str] = []
    for sec in security_tasks:
        finding_text = outputs.get(sec, "") + "\n" + "\n".join(contents.get(sec, {}).values())
        for risk, (finding_rx, fix_rx, fix) in SECURITY_TOPICS.items():
            if not re.search(finding_rx, finding_text, re.IGNORECASE):
                continue
            addressed = [where for where, text in code.items()
                         if re.search(fix_rx, text, re.IGNORECASE)]
            if addressed:
                continue
            owners = [t for t in coders if sec not in _ancestors(specs, t)] or coders
            target = ", ".join(owners) or "the code"
            requirements.append(f"{risk}: {fix} (raised by {sec}; applies to {target})")
            out.append(Conflict(
                "security_unaddressed", risk, [sec] + owners,
                f"{sec} raises {risk}; no code file "
                f"({len(code)} checked) shows the mitigation",
                f"required change recorded in {SECURITY_FILE}: {fix}",
                "security recommendations always apply: the code must change, and until it "
                "does the delivery is not security-complete", winner=sec))
    return out, requirements


# -- contradictions ----------------------------------------------------------------------
#: subject -> (owner role, {option: pattern})
SUBJECTS: dict[str, tuple[str, dict[str, str]]] = {
    "database engine": ("database", {
        "PostgreSQL": r"postgres(?:ql)?|psycopg", "MySQL": r"mysql|mariadb",
        "SQLite": r"sqlite", "MongoDB": r"mongo(?:db)?", "Supabase": r"supabase",
        "DynamoDB": r"dynamodb"}),
    "backend framework": ("backend", {
        "FastAPI": r"fastapi", "Flask": r"flask", "Django": r"django",
        "Express": r"express(?:\.js)?", "Rails": r"rails", "Spring": r"spring boot|spring",
        "Laravel": r"laravel", "NestJS": r"nestjs"}),
    "frontend framework": ("frontend", {
        "React": r"react", "Vue": r"vue(?:\.js)?", "Angular": r"angular",
        "Svelte": r"svelte", "Next.js": r"next\.js|nextjs", "plain HTML": r"plain html|vanilla"}),
}
_CHOICE_VERBS = (r"use|uses|using|used|with|choose|chose|chosen|pick|picked|recommend|"
                 r"recommended|built (?:on|with)|based on|powered by|backed by|store[sd]? in|"
                 r"go with|prefer|select(?:ed)?|on top of|implemented (?:in|with)")


def _choices(text: str, options: dict[str, str]) -> set[str]:
    found = set()
    for sentence in re.split(r"(?<=[.!?\n])\s+", text):
        for option, rx in options.items():
            if re.search(rf"\b(?:{_CHOICE_VERBS})\b[^.!?\n]{{0,40}}\b(?:{rx})\b", sentence,
                         re.IGNORECASE):
                found.add(option)
    return found


def _code_choices(files: dict[str, str], options: dict[str, str]) -> set[str]:
    found = set()
    for path, text in files.items():
        if Path(path).suffix.lower() not in _CODE_EXT:
            continue
        for option, rx in options.items():
            if re.search(rf"(?:import|require|from|://|connect)\W[^\n]{{0,40}}\b(?:{rx})", text,
                         re.IGNORECASE):
                found.add(option)
    return found


def _contradictions(specs: dict[str, dict[str, Any]], outputs: dict[str, str],
                    contents: dict[str, dict[str, str]]) -> list[Conflict]:
    out = []
    for subject, (owner_role, options) in SUBJECTS.items():
        by_task: dict[str, set[str]] = {}
        for t in specs:
            chosen = _choices(outputs.get(t, ""), options) | _code_choices(
                contents.get(t, {}), options)
            if len(chosen) == 1:  # a task naming several options is comparing, not choosing
                by_task[t] = chosen
        picked = {next(iter(c)) for c in by_task.values()}
        if len(picked) < 2:
            continue
        tasks = sorted(by_task, key=list(specs).index)
        said = "; ".join(f"{t}: {next(iter(by_task[t]))}" for t in tasks)
        owners = [t for t in tasks if specs[t].get("agent") == owner_role]
        owner_choices = {next(iter(by_task[t])) for t in owners}
        if len(owner_choices) == 1:
            choice = owner_choices.pop()
            rationale = f"the {owner_role} role owns the {subject}: its choice stands"
            winner = owners[0]
        else:
            counts: dict[str, int] = {}
            for t in tasks:
                c = next(iter(by_task[t]))
                counts[c] = counts.get(c, 0) + 1
            best = max(counts.values())
            leaders = [c for c, n in counts.items() if n == best]
            if len(leaders) == 1:
                choice = leaders[0]
                rationale = (f"irreconcilable (no single {owner_role} owner); the coordinator "
                             f"decides by majority: {best} of {len(tasks)} tasks chose {choice}")
                winner = next(t for t in tasks if choice in by_task[t])
            else:
                winner = max(tasks, key=lambda t: (specs[t].get("priority", 5),
                                                   -tasks.index(t)))
                choice = next(iter(by_task[winner]))
                rationale = (f"irreconcilable and tied; the coordinator decides for the "
                             f"highest-priority task {winner}")
        out.append(Conflict("contradiction", subject, tasks,
                            f"different choices for the {subject}: {said}",
                            f"{choice} is the {subject}; work that assumed otherwise must be "
                            f"adapted", rationale, winner=winner))
    return out


# -- the entry point ---------------------------------------------------------------------
def aggregate(
    tasks: list[dict[str, Any]],
    result: RunResult,
    workspace: str | Path | None,
    snapshots: dict[str, dict[str, str]] | None = None,
) -> Aggregation:
    """Merge `result` into `workspace`, detect conflicts and apply the resolution rules.

    `tasks` are the plan's task specs (roles, priorities, dependencies); `snapshots` the
    content of each file as each task wrote it (task -> path -> text; see `versions`: taken
    at write time, since tasks writing one file at overlapping times overwrite each other);
    without them the workspace's current content stands for every writer.
    """
    ws = Path(workspace) if workspace is not None else None
    specs = {t["id"]: t for t in tasks}
    snapshots = {k: dict(v) for k, v in (snapshots or {}).items()}
    outputs = {tid: output_text(r.output) for tid, r in result.tasks.items()
               if r.status == "succeeded"}
    writers: dict[str, list[str]] = {}
    order = sorted(result.tasks.values(), key=lambda r: (r.finished_at or 0.0))
    for r in order:
        if r.status != "succeeded":
            continue
        for path in r.files:
            rel = relative_in(ws, path)
            if rel is None:
                continue
            writers.setdefault(rel, [])
            if r.id not in writers[rel]:
                writers[rel].append(r.id)
            if ws is not None and rel not in snapshots.get(r.id, {}):
                text = _read(ws / rel)
                if text is not None:
                    snapshots.setdefault(r.id, {})[rel] = text
    conflicts = _same_file_conflicts(specs, writers, snapshots, ws)
    for c in conflicts:  # the file's final owner goes last
        if c.winner and c.subject in writers:
            writers[c.subject] = [t for t in writers[c.subject] if t != c.winner] + [c.winner]
    sec, requirements = _security_conflicts(specs, outputs, snapshots)
    conflicts += sec
    conflicts += _contradictions(specs, outputs, snapshots)
    if requirements and ws is not None:
        lines = ["# Security requirements", "",
                 "Raised by the security review and not yet found in the code. Security "
                 "recommendations always apply: each item is a required change.", ""]
        lines += [f"- [ ] {r}" for r in requirements]
        (ws / SECURITY_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
        writers.setdefault(SECURITY_FILE, []).append("coordinator")
    return Aggregation(workspace=ws, files=dict(sorted(writers.items())), outputs=outputs,
                       conflicts=conflicts, security_requirements=requirements)
