"""Coordinated runs: plan -> parallel tasks -> one workspace, conflicts resolved, one answer.

The tasks run through the real executor as function tasks (`run_task`), writing real files
in a real workspace; only the model is scripted.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from coord_helpers import FOUR, RESTAURANT, FileWriter, plan_json, planner

from parallel_agents.coordinator import DEFAULT_POOLS, Coordinator


def coordinate(workspace: Path, writer: FileWriter, answer: str = FOUR, **kw):
    c = Coordinator(planner(answer), workspace=workspace, run_task=writer, **kw)
    return asyncio.run(c.run(RESTAURANT))


def by_kind(outcome, kind):
    return [c for c in outcome.conflicts if c.kind == kind]


def test_runs_in_parallel_and_answers(workspace):
    writer = FileWriter(files={
        "frontend": {"index.html": "<form>{{ csrf_token }}</form>"},
        "backend": {"app.py": "db.execute('INSERT INTO b VALUES (?, ?)', (a, b))\n"
                              "# csrf check, rate_limit(5)"},
        "schema": {"schema.sql": "CREATE TABLE bookings (id INTEGER PRIMARY KEY);"},
    }, texts={"audit": "No issues beyond CSRF, which is handled."})
    out = coordinate(workspace, writer)
    assert out.run.status == "succeeded"
    assert out.run.max_parallel >= 2
    assert {p for p in out.aggregation.files} == {"index.html", "app.py", "schema.sql"}
    assert out.conflicts == []
    text = out.final_response
    assert text.startswith("# Done: Build a restaurant website with booking")
    for section in ("## Plan", "## What was built", "## Results per agent", "## Conflicts",
                    "## Time and cost"):
        assert section in text
    assert "`schema.sql` (by schema)" in text
    assert (workspace / "FINAL_RESPONSE.md").read_text() == text
    data = out.to_dict()
    json.dumps(data)
    assert data["final_response"] == text
    assert data["workspace"] == str(workspace)
    assert [t["id"] for t in data["plan"]["tasks"]] == ["frontend", "backend", "schema", "audit"]
    assert data["decision"]["mode"] == "parallel"
    assert data["conflicts"] == [] and data["repairs"] == []


def test_file_written_by_two_agents_is_a_resolved_conflict(workspace):
    writer = FileWriter(files={
        "frontend": {"index.html": "<h1>From the frontend</h1>"},
        "backend": {"index.html": "<h1>From the backend</h1>", "app.py": "print('api')"},
    })
    out = coordinate(workspace, writer)
    [c] = by_kind(out, "same_file")
    assert c.subject == "index.html"
    assert set(c.tasks) == {"frontend", "backend"}
    assert c.winner == "frontend"  # .html belongs to the frontend role
    assert "frontend role" in c.rationale
    assert (workspace / "index.html").read_text() == "<h1>From the frontend</h1>"
    kept = workspace / ".coordinator/conflicts/backend/index.html"
    assert kept.read_text() == "<h1>From the backend</h1>"
    assert "same_file" in out.final_response and "index.html" in out.final_response
    assert out.to_dict()["conflicts"][0]["kind"] == "same_file"


def test_a_dependent_writer_wins_and_documents_merge(workspace):
    answer = plan_json(
        {"id": "backend", "agent": "backend", "description": "API", "depends_on": []},
        {"id": "frontend", "agent": "frontend", "description": "UI", "depends_on": []},
        {"id": "schema", "agent": "database", "description": "Tables", "depends_on": []},
        {"id": "fix", "agent": "codegen", "description": "Polish the API",
         "depends_on": ["backend"]},
    )
    writer = FileWriter(files={
        "backend": {"api.js": "v1", "README.md": "# API\nendpoints"},
        "fix": {"api.js": "v2"},
        "frontend": {"README.md": "# UI\npages"},
    })
    out = coordinate(workspace, writer, answer)
    conflicts = {c.subject: c for c in by_kind(out, "same_file")}
    assert conflicts["api.js"].winner == "fix"
    assert "depends on backend" in conflicts["api.js"].rationale
    assert (workspace / "api.js").read_text() == "v2"
    readme = (workspace / "README.md").read_text()
    assert "endpoints" in readme and "pages" in readme
    assert "complementary" in conflicts["README.md"].rationale


def test_security_finding_unaddressed_by_code(workspace):
    writer = FileWriter(
        files={"backend": {"app.py": "def book(req):\n    db.execute('INSERT ' + req.name)\n"},
               "frontend": {"index.html": "<form method=post></form>"}},
        texts={"audit": "Findings: add CSRF tokens to the booking form. Use parameterized "
                        "queries to stop SQL injection. Add rate limiting on /book."})
    out = coordinate(workspace, writer)
    risks = {c.subject: c for c in by_kind(out, "security_unaddressed")}
    assert set(risks) == {"CSRF", "SQL injection", "rate limiting"}
    assert risks["CSRF"].tasks[0] == "audit"
    assert "always apply" in risks["CSRF"].rationale
    req = (workspace / "SECURITY_REQUIREMENTS.md").read_text()
    assert "CSRF" in req and "parameterised" in req
    assert "## Still required (security)" in out.final_response


def test_security_finding_addressed_by_code_is_no_conflict(workspace):
    writer = FileWriter(
        files={"backend": {"app.py": "from flask_wtf.csrf import CSRFProtect\n"
                                     "db.execute('SELECT * FROM t WHERE id = ?', (i,))\n"}},
        texts={"audit": "Add CSRF tokens; prevent SQL injection."})
    out = coordinate(workspace, writer)
    assert by_kind(out, "security_unaddressed") == []
    assert not (workspace / "SECURITY_REQUIREMENTS.md").exists()


def test_contradicting_choices_are_decided_by_the_owner(workspace):
    writer = FileWriter(texts={
        "backend": "I built the API with FastAPI and we use PostgreSQL for storage.",
        "schema": "Tables designed. We use SQLite as the database.",
        "frontend": "Pages built with plain HTML.",
    })
    out = coordinate(workspace, writer)
    [c] = by_kind(out, "contradiction")
    assert c.subject == "database engine"
    assert c.winner == "schema"
    assert c.resolution.startswith("SQLite is the database engine")
    assert "database role owns" in c.rationale


def test_contradiction_without_an_owner_is_decided_and_explained(workspace):
    answer = plan_json(
        {"id": "a", "agent": "codegen", "description": "part a", "depends_on": []},
        {"id": "b", "agent": "codegen", "description": "part b", "depends_on": []},
        {"id": "c", "agent": "frontend", "description": "part c", "depends_on": []},
        {"id": "d", "agent": "security", "description": "part d", "depends_on": []},
    )
    writer = FileWriter(texts={"a": "Built on Flask.", "b": "We chose Django.",
                               "c": "Uses Flask for the pages."})
    out = coordinate(workspace, writer, answer)
    [c] = by_kind(out, "contradiction")
    assert c.subject == "backend framework"
    assert "majority" in c.rationale and c.resolution.startswith("Flask")


def test_failed_task_is_partial_delivery_said_plainly(workspace):
    writer = FileWriter(files={"frontend": {"index.html": "<p>hi</p>"}}, fail={"backend"})
    no_retries = {name: {**cfg, "max_retries": 0} for name, cfg in DEFAULT_POOLS.items()}
    out = coordinate(workspace, writer, pools=no_retries)
    assert out.run.status == "partial"
    text = out.final_response
    assert text.startswith("# Partial delivery:")
    assert "## Not delivered" in text
    assert "backend (backend): failed" in text
    assert "audit (security): skipped" in text


def test_llm_summary_paragraph_is_optional(workspace):
    answers = [FOUR, "The team built the site and its booking API."]
    c = Coordinator(planner(*answers), workspace=workspace, run_task=FileWriter(),
                    summarize=True)
    out = asyncio.run(c.run(RESTAURANT))
    assert "The team built the site and its booking API." in out.final_response.split("## Plan")[0]


def test_template_run_uses_exactly_the_template(workspace):
    writer = FileWriter()
    c = Coordinator(planner("unused"), workspace=workspace, run_task=writer)
    out = asyncio.run(c.run(RESTAURANT, template="api"))
    assert sorted(writer.started) == sorted(out.run.tasks) == sorted(
        ["architecture", "api_design", "database_models", "backend", "security", "testing",
         "deployment"])
    assert out.decomposition.template == "api"


def test_llm_tasks_save_their_answers_and_take_task_defaults(workspace):
    c = Coordinator(planner(FOUR), workspace=workspace, model="local:smollm2",
                    task_defaults={"max_iterations": 4})
    d = asyncio.run(c.plan(RESTAURANT))
    for t in d.tasks:
        assert t["output_file"] == f"answers/{t['id']}.md"
        assert t["max_iterations"] == 4 and t["model"] == "local:smollm2"
    off = Coordinator(planner(FOUR), answers_dir=None)
    assert all("output_file" not in t for t in asyncio.run(off.plan(RESTAURANT)).tasks)


def test_the_plan_is_predicted_and_decided_under_the_runs_limits(tmp_path):
    """`max_workers` and the executor's `strategy` are what the run will do: the prediction,
    the serial/parallel decision and the record use them, not an unlimited schedule."""
    two = coordinate(tmp_path / "two", FileWriter(), max_workers=2)
    assert "up to 2 at once under max_workers 2" in two.decomposition.reason
    assert two.run.max_parallel <= 2
    assert two.to_dict()["max_workers"] == 2
    assert "up to 3 at once" not in two.final_response
    assert coordinate(tmp_path / "free", FileWriter()).to_dict()["max_workers"] is None

    one = asyncio.run(Coordinator(planner(FOUR), max_workers=1).plan(RESTAURANT))
    assert one.decision == "serial" and [t["id"] for t in one.tasks] == ["main"]
    assert "max_workers 1" in one.reason and "one task run at a time" in one.reason
    sequential = asyncio.run(Coordinator(planner(FOUR), executor_options={
        "strategy": "sequential"}).plan(RESTAURANT))
    assert sequential.decision == "serial" and "strategy sequential" in sequential.reason
    # Parallel work is still kept apart when asked, and then predicted one at a time.
    forced = asyncio.run(Coordinator(planner(FOUR), max_workers=1).plan(
        RESTAURANT, force_parallel=True))
    assert len(forced.tasks) == 4
    assert forced.predicted_makespan == forced.predicted_serial == 240
