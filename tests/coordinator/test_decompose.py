"""Decomposition: LLM plans are repaired, templates are exact, small requests stay serial."""

from __future__ import annotations

import asyncio

import pytest

from parallel_agents import UsageError
from parallel_agents.coordinator import TEMPLATES, decompose, to_plan
from parallel_agents.coordinator.decompose import PLAN_SCHEMA, parse_plan_text, repair_tasks

from coord_helpers import plan_json, planner

RESTAURANT = "Build a restaurant website with booking"


def run(coro):
    return asyncio.run(coro)


def kinds(d):
    return [r.kind for r in d.repairs]


def valid(d):
    """The plan builds (ids unique, deps known, acyclic, pools declared)."""
    return to_plan(d.plan, run_task=lambda spec, ctx: None)


def test_planning_request_asks_for_the_plan_schema():
    p = planner(plan_json({"id": "a", "agent": "writer", "description": "x",
                           "depends_on": []}))
    run(decompose("Write a haiku", p, planner_model="m"))
    req = p.requests[0]
    assert req.json_schema == PLAN_SCHEMA
    assert req.model == "m"
    assert req.messages[-1].content == "Write a haiku"


def test_fenced_json_with_trailing_commas_is_repaired():
    text = """Sure! Here is the plan:
```json
{"tasks": [
  {"id": "ui", "agent": "frontend", "description": "Build the pages", "depends_on": [],},
  {"id": "api", "agent": "backend", "description": "Build the booking API", "depends_on": [],},
  {"id": "db", "agent": "database", "description": "Design the schema", "depends_on": [],},
  {"id": "audit", "agent": "security", "description": "Audit the API", "depends_on": ["api"]},
]}
```"""
    d = run(decompose(RESTAURANT, planner(text)))
    assert d.source == "llm"
    assert [t["id"] for t in d.tasks] == ["ui", "api", "db", "audit"]
    assert "parse" in kinds(d)
    assert any("trailing commas" in r.message for r in d.repairs)
    assert d.decision == "parallel"
    valid(d)


def test_truncated_json_is_closed_and_kept():
    text = ('{"tasks": [{"id": "a", "agent": "frontend", "description": "Pages", '
            '"depends_on": []}, {"id": "b", "agent": "backend", "description": "API", '
            '"depends_on": []}, {"id": "c", "agent": "database", "description": "Sche')
    data, repairs = parse_plan_text(text)
    assert [t["id"] for t in data["tasks"]][:2] == ["a", "b"]
    assert any("truncated" in r.message for r in repairs)


def test_unusable_answer_falls_back_to_keywords_with_a_valid_parallel_plan():
    d = run(decompose(RESTAURANT, planner("I am a small model and I like restaurants.")))
    assert d.source == "keywords"
    assert "fallback" in kinds(d)
    assert len(d.tasks) >= 3
    assert len({t["pool"] for t in d.tasks}) >= 2
    assert d.decision == "parallel"
    valid(d)


def test_a_plan_coarser_than_the_request_is_replaced_and_said_so():
    one = plan_json({"id": "site", "agent": "codegen", "description": "Make the website",
                     "depends_on": []})
    d = run(decompose(RESTAURANT, planner(one)))
    assert d.source == "keywords"
    assert any(r.kind == "fallback" and "coarser" in r.message for r in d.repairs)
    assert {"frontend", "backend", "database_schema", "security_audit"} <= {
        t["id"] for t in d.tasks}


def test_cyclic_plan_is_broken_and_recorded():
    text = plan_json(
        {"id": "a", "agent": "backend", "description": "API", "depends_on": ["c"]},
        {"id": "b", "agent": "frontend", "description": "UI", "depends_on": ["a"]},
        {"id": "c", "agent": "database", "description": "Schema", "depends_on": ["b"]},
        {"id": "d", "agent": "security", "description": "Audit", "depends_on": []},
    )
    d = run(decompose(RESTAURANT, planner(text)))
    cycles = [r for r in d.repairs if r.kind == "cycle"]
    assert len(cycles) == 1
    # a (first) depends on c (last): the edge to a later task is the one dropped
    assert cycles[0].task_id == "a"
    deps = {t["id"]: t["depends_on"] for t in d.tasks}
    assert deps == {"a": [], "b": ["a"], "c": ["b"], "d": []}
    valid(d)


def test_ids_deps_priorities_and_estimates_are_repaired():
    text = plan_json(
        {"id": "Build UI!", "agent": "frontend", "description": "Pages", "depends_on": [],
         "priority": "urgent", "estimated_seconds": "2 min"},
        {"id": "api", "agent": "backend", "description": "API", "depends_on": ["api", "ghost"],
         "priority": 99, "estimated_seconds": -5},
        {"id": "api", "agent": "database", "description": "Schema", "depends_on": "Build UI!",
         "priority": "whenever", "estimated_seconds": 10**9},
        {"agent": "security", "description": "Audit the API", "depends_on": ["api"]},
    )
    data, _ = parse_plan_text(text)
    tasks, repairs, _ = repair_tasks(data["tasks"], RESTAURANT)
    by_id = {t["id"]: t for t in tasks}
    assert list(by_id) == ["build_ui", "api", "api_2", "security_4"]
    assert by_id["build_ui"]["priority"] == 10
    assert by_id["build_ui"]["estimated_seconds"] == 120
    assert by_id["api"]["depends_on"] == []
    assert by_id["api"]["priority"] == 10
    assert by_id["api"]["estimated_seconds"] == 60  # the default
    assert by_id["api_2"]["depends_on"] == ["build_ui"]
    assert by_id["api_2"]["priority"] == 5
    assert by_id["api_2"]["estimated_seconds"] == 3600
    assert by_id["security_4"]["depends_on"] == ["api"]
    got = {r.kind for r in repairs}
    assert {"id", "duplicate_id", "self_dependency", "unknown_dependency", "priority",
            "estimate"} <= got
    # the whole decomposition: repairs listed; this plan's huge estimate makes it serial,
    # which forfeits the request's obvious parallelism: the keyword plan replaces it
    d = run(decompose(RESTAURANT, planner(text)))
    assert {"duplicate_id", "estimate"} <= set(kinds(d))
    assert d.source == "keywords" and d.decision == "parallel"
    assert any(r.kind == "fallback" and "speedup" in r.message for r in d.repairs)


def test_unknown_roles_map_to_the_closest_role_and_pool():
    text = plan_json(
        {"id": "a", "agent": "developer", "description": "Write the booking code",
         "depends_on": []},
        {"id": "b", "agent": "dba", "description": "Tables for bookings", "depends_on": []},
        {"id": "c", "agent": "pentester", "description": "Look for holes", "depends_on": []},
        {"id": "d", "agent": "wizard", "description": "Design the SQL schema and indexes",
         "depends_on": []},
    )
    d = run(decompose(RESTAURANT, planner(text)))
    roles = {t["id"]: (t["agent"], t["pool"]) for t in d.tasks}
    assert roles["a"] == ("codegen", "codegen")
    assert roles["b"] == ("database", "database")
    assert roles["c"] == ("security", "security")
    assert roles["d"] == ("database", "database")
    unknown = [r for r in d.repairs if r.kind == "unknown_role"]
    assert {r.task_id for r in unknown} == {"a", "b", "c", "d"}
    assert all(t["id"] in d.distribution for t in d.tasks)


def test_small_request_stays_serial_and_says_why():
    one = plan_json({"id": "haiku", "agent": "writer", "description": "Write the haiku",
                     "depends_on": []})
    d = run(decompose("Write a haiku about the sea", planner(one)))
    assert d.decision == "serial"
    assert "only 1 part" in d.reason
    assert len(d.tasks) == 1


def test_two_parts_are_not_split():
    two = plan_json(
        {"id": "draft", "agent": "writer", "description": "Draft the email", "depends_on": []},
        {"id": "edit", "agent": "writer", "description": "Edit it", "depends_on": ["draft"]})
    d = run(decompose("Write an email to my landlord", planner(two)))
    assert d.decision == "serial"
    assert [t["id"] for t in d.tasks] == ["main"]
    assert "Draft the email" in d.tasks[0]["prompt"]  # the parts became steps


def test_a_chain_and_tiny_work_stay_serial():
    chain = plan_json(*[{"id": f"s{i}", "agent": "codegen", "description": f"step {i}",
                         "depends_on": [f"s{i - 1}"] if i else []} for i in range(4)])
    d = run(decompose("Refactor the parser step by step", planner(chain)))
    assert d.decision == "serial" and "chain" in d.reason
    tiny = plan_json(*[{"id": f"t{i}", "agent": "codegen", "description": f"tweak {i}",
                        "depends_on": [], "estimated_seconds": 1} for i in range(3)])
    d = run(decompose("Rename three variables", planner(tiny)))
    assert d.decision == "serial" and "tiny work" in d.reason


def test_template_full_stack_is_exact_and_asks_no_model():
    p = planner("not used")
    d = run(decompose(RESTAURANT, p, template="full_stack"))
    assert p.requests == []
    assert d.source == "template" and d.template == "full_stack" and d.repairs == []
    expected = TEMPLATES["full_stack"](RESTAURANT)
    strip = [{k: v for k, v in t.items() if k != "prompt"} for t in d.tasks]
    assert strip == expected
    assert [t["id"] for t in d.tasks] == [
        "architecture", "requirements", "database_schema", "api_spec", "ui_mockups",
        "backend", "frontend", "integration", "qa", "security_audit", "deployment"]
    assert d.plan["pools"].keys() == {"general", "database", "codegen", "security"}
    assert d.plan["pools"]["codegen"] == {"max_concurrent": 3, "timeout_sec": 300,
                                          "max_retries": 2}
    valid(d)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_builds_a_valid_plan(name):
    d = run(decompose("Review app.py and api.py with search, filters and export", None,
                      template=name))
    assert len(d.tasks) >= 3
    valid(d)


def test_unknown_template_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown template 'fullstack'"):
        run(decompose("x", None, template="fullstack"))


def test_empty_request_is_a_usage_error():
    with pytest.raises(UsageError, match="empty"):
        run(decompose("   ", None))


def test_model_is_set_on_every_task():
    d = run(decompose(RESTAURANT, None, model="openai:gpt-4o-mini"))
    assert {t["model"] for t in d.tasks} == {"openai:gpt-4o-mini"}


def test_a_single_task_plan_runs_the_request_itself_with_the_role_it_asks_for():
    # what SmolLM2-135M really answered for this request: a guessed role, a rambling text
    odd = plan_json({"id": "1", "agent": "architect", "depends_on": ["id", "description"],
                     "description": "The sea is a tapestry of endless possibilities"})
    d = run(decompose("Write a haiku about the sea", planner(odd)))
    assert d.decision == "serial"
    [task] = d.tasks
    assert task["id"] == "main" and task["agent"] == "writer" and task["pool"] == "general"
    assert task["prompt"] == "Write a haiku about the sea"
    assert sum(r.kind == "unknown_dependency" for r in d.repairs) == 2


def test_a_chain_for_a_parallel_request_is_replaced_by_the_keyword_plan():
    chain = plan_json(
        {"id": "ui", "agent": "frontend", "description": "Pages", "depends_on": []},
        {"id": "api", "agent": "backend", "description": "API", "depends_on": ["ui"]},
        {"id": "db", "agent": "database", "description": "Tables", "depends_on": ["api"]})
    d = run(decompose(RESTAURANT, planner(chain)))
    assert d.source == "keywords" and d.decision == "parallel"
    [fallback] = [r for r in d.repairs if r.kind == "fallback"]
    assert "chain" in fallback.message
