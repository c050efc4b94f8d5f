"""Plans: loading by extension, validation that reports every problem with its location."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import parallel_agents as pa


def problems_of(exc: pa.PlanError) -> dict[str, str]:
    return {p.location: p.message for p in exc.problems}


def test_yaml_and_json_load_by_extension(tmp_path: Path) -> None:
    data = {
        "name": "site",
        "max_workers": 3,
        "pools": {"codegen": {"max_concurrent": 2, "timeout_sec": 30, "max_retries": 1}},
        "tasks": [
            {"id": "frontend", "pool": "codegen", "command": ["echo", "fe"], "priority": "high"},
            {"id": "backend", "pool": "codegen", "command": "echo 'be x'", "priority": 9},
            {"id": "audit", "depends_on": "backend", "command": ["echo", "ok"],
             "env": {"DEBUG": 1, "VERBOSE": True}, "estimated_seconds": 2.5},
        ],
    }
    (tmp_path / "p.json").write_text(json.dumps(data))
    (tmp_path / "p.yaml").write_text(
        "name: site\nmax_workers: 3\npools:\n  codegen: {max_concurrent: 2, timeout_sec: 30, "
        "max_retries: 1}\ntasks:\n"
        "  - {id: frontend, pool: codegen, command: [echo, fe], priority: high}\n"
        "  - {id: backend, pool: codegen, command: \"echo 'be x'\", priority: 9}\n"
        "  - id: audit\n    depends_on: backend\n    command: [echo, ok]\n"
        "    env: {DEBUG: 1, VERBOSE: true}\n    estimated_seconds: 2.5\n"
    )
    # The .yml spelling is YAML too; the content is JSON, which YAML also reads.
    (tmp_path / "p.yml").write_text(json.dumps(data))
    plans = [pa.Plan.from_file(tmp_path / n) for n in ("p.json", "p.yaml", "p.yml")]
    for plan in plans:
        assert plan.name == "site" and plan.max_workers == 3
        assert [t.id for t in plan.tasks] == ["frontend", "backend", "audit"]
        assert plan.task("frontend").priority == 7  # high
        assert plan.task("backend").command == ("echo", "be x")
        assert plan.task("audit").depends_on == ("backend",)
        assert plan.task("audit").pool == "default"
        assert plan.task("audit").env == {"DEBUG": "1", "VERBOSE": "true"}
        assert plan.pools["codegen"].max_concurrent == 2
        assert plan.policy(plan.task("frontend")) == (30, 1, 1.0)
    assert plans[0].describe() == plans[1].describe()


def test_json_file_is_parsed_as_json_not_yaml(tmp_path: Path) -> None:
    # YAML would accept this (a plain scalar); JSON must not.
    path = tmp_path / "plan.json"
    path.write_text("tasks: []\n")
    with pytest.raises(pa.PlanError) as info:
        pa.Plan.from_file(path)
    assert "invalid JSON" in str(info.value)
    assert "line 1" in str(info.value)


def test_unsupported_extension_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_text("")
    with pytest.raises(pa.PlanError, match="use a .yaml, .yml or .json"):
        pa.Plan.from_file(path)
    with pytest.raises(pa.PlanError, match="no such file"):
        pa.Plan.from_file(tmp_path / "nope.yaml")


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("tasks:\n  - id: a\n    command: [echo\n")
    with pytest.raises(pa.PlanError) as info:
        pa.Plan.from_file(path)
    assert "invalid YAML" in str(info.value) and "line " in str(info.value)


def test_every_problem_reported_at_once_with_location() -> None:
    data = {
        "nme": "typo",
        "pools": {"gpu": {"max_concurent": 2}},
        "tasks": [
            {"id": "a", "command": ["true"], "priority": "urgent", "timeout_sec": -1},
            {"id": "a", "command": ["true"]},
            {"id": "b", "command": ["true"], "depends_on": ["aa"], "pool": "gpuu"},
            {"id": "c", "command": ["true"], "dependson": ["a"]},
            {"id": "d", "command": ["true"], "max_retries": -2},
            {"id": "e", "command": ["true"], "pool": "nowhere"},
        ],
    }
    with pytest.raises(pa.PlanError) as info:
        pa.Plan.from_dict(data, source="plan.yaml")
    found = problems_of(info.value)
    assert "did you mean 'name'" in found["nme"]
    assert "did you mean 'max_concurrent'" in found["pools.gpu.max_concurent"]
    assert "unknown priority 'urgent'" in found["tasks[0] (a).priority"]
    assert "critical|high|medium|low" in found["tasks[0] (a).priority"]
    assert "greater than 0" in found["tasks[0] (a).timeout_sec"]
    assert "-1" in found["tasks[0] (a).timeout_sec"]
    # A task that failed validation still counts for duplicates and dependencies.
    assert "duplicate task id 'a'" in found["tasks[1] (a)"]
    assert "tasks[0]" in found["tasks[1] (a)"]
    assert "unknown task 'aa'; did you mean 'a'?" in found["tasks[2] (b).depends_on"]
    # The pool with a bad field is still a known pool name.
    assert "unknown pool 'gpuu'" in found["tasks[2] (b).pool"]
    assert "did you mean 'gpu'" in found["tasks[2] (b).pool"]
    assert "did you mean 'depends_on'" in found["tasks[3] (c).dependson"]
    assert "greater than or equal to 0" in found["tasks[4] (d).max_retries"]
    assert "unknown pool 'nowhere'" in found["tasks[5] (e).pool"]
    assert len(info.value.problems) == 10
    text = str(info.value)
    assert text.startswith("invalid plan in plan.yaml: 10 problems")


@pytest.mark.parametrize(
    "task, location, fragment",
    [
        ({"id": "a", "command": ["x"], "priority": 11}, "tasks[0] (a).priority", "less than"),
        ({"id": "a", "command": ["x"], "priority": True}, "tasks[0] (a).priority", "boolean"),
        ({"id": "a", "command": ["x"], "estimated_seconds": 0},
         "tasks[0] (a).estimated_seconds", "greater than 0"),
        ({"id": "a", "command": []}, "tasks[0] (a).command", "command is empty"),
        ({"id": "a"}, "tasks[0] (a)", "nothing to run"),
        ({"id": "a", "command": ["x"], "depends_on": ["a"]}, "tasks[0] (a)", "depends on itself"),
        ({"command": ["x"]}, "tasks[0].id", "required"),
        ({"id": "a", "run": "x"}, "tasks[0] (a).run", "only for Python callables"),
    ],
)
def test_bad_field_values(task: dict, location: str, fragment: str) -> None:
    with pytest.raises(pa.PlanError) as info:
        pa.Plan.from_dict({"tasks": [task]})
    found = problems_of(info.value)
    assert location in found, found
    assert fragment in found[location]


def test_non_mapping_plan_and_tasks() -> None:
    with pytest.raises(pa.PlanError, match="must be a mapping"):
        pa.Plan.from_dict(["a"])
    with pytest.raises(pa.PlanError, match="must be a list"):
        pa.Plan.from_dict({"tasks": {"a": 1}})
    with pytest.raises(pa.PlanError, match="must be a mapping with an `id`"):
        pa.Plan.from_dict({"tasks": ["a"]})


def test_cycle_is_printed_as_a_path() -> None:
    data = {"tasks": [
        {"id": "a", "command": ["x"], "depends_on": ["c"]},
        {"id": "b", "command": ["x"], "depends_on": ["a"]},
        {"id": "c", "command": ["x"], "depends_on": ["b"]},
        {"id": "free", "command": ["x"]},
    ]}
    with pytest.raises(pa.CycleError) as info:
        pa.Plan.from_dict(data)
    cycle = info.value.cycle
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["a", "b", "c"]
    # "each task depends on the next": check every arrow against the plan.
    deps = {t["id"]: t["depends_on"] for t in data["tasks"] if "depends_on" in t}
    for here, nxt in zip(cycle, cycle[1:]):
        assert nxt in deps[here]
    assert " -> ".join(cycle) in str(info.value)


def test_cycle_reported_together_with_other_problems() -> None:
    data = {"tasks": [
        {"id": "a", "command": ["x"], "depends_on": ["b"]},
        {"id": "b", "command": ["x"], "depends_on": ["a", "ghost"]},
    ]}
    with pytest.raises(pa.PlanError) as info:
        pa.Plan.from_dict(data)
    text = str(info.value)
    assert "unknown task 'ghost'" in text
    assert "dependency cycle: a -> b -> a" in text or "dependency cycle: b -> a -> b" in text


def test_empty_plan_is_valid_and_succeeds_at_once(tmp_path: Path) -> None:
    for plan in (pa.Plan(), pa.Plan.from_dict({}), pa.Plan.from_text("")):
        assert len(plan) == 0
        result = pa.run(plan)
        assert result.status == "succeeded"
        assert result.tasks == {}
        assert result.makespan_seconds < 1.0


def test_python_built_plan() -> None:
    def fn() -> int:
        return 1

    plan = pa.Plan(
        tasks=[
            pa.Task(id="a", run=fn, pool="gpu", priority="critical"),
            pa.Task(id="b", run=lambda ctx: ctx.inputs["a"] + 1, depends_on=["a"]),
        ],
        pools={"gpu": pa.Pool(max_concurrent=1)},
    )
    assert plan.task("a").kind == "function" and plan.task("a").priority == 10
    assert plan.all_pools().keys() == {"gpu", "default"}
    result = pa.run(plan)
    assert result.status == "succeeded"
    assert result.tasks["b"].output == 2


def test_python_built_plan_validation_errors() -> None:
    with pytest.raises(pa.PlanError, match="unknown task 'x'"):
        pa.Plan(tasks=[pa.Task(id="a", run=lambda: 1, depends_on=["x"])])
    with pytest.raises(pa.PlanError, match="duplicate task id 'a'"):
        pa.Plan(tasks=[pa.Task(id="a", run=lambda: 1), pa.Task(id="a", run=lambda: 2)])
    with pytest.raises(pa.CycleError, match="a -> b -> a|b -> a -> b"):
        pa.Plan(tasks=[pa.Task(id="a", run=lambda: 1, depends_on=["b"]),
                       pa.Task(id="b", run=lambda: 1, depends_on=["a"])])
    with pytest.raises(pa.PlanError, match="unknown pool 'gpu'"):
        pa.Plan(tasks=[pa.Task(id="a", run=lambda: 1, pool="gpu")])
    with pytest.raises(ValueError, match="either command or run"):
        pa.Task(id="a", run=lambda: 1, command=["x"])
    with pytest.raises(ValueError, match="run must be callable|callable"):
        pa.Task(id="a", run=3)


def test_yaml_scalars_in_command_and_booleans_explained() -> None:
    plan = pa.Plan.from_text("tasks:\n  - {id: a, command: [sleep, 1, 0.5]}\n")
    assert plan.task("a").command == ("sleep", "1", "0.5")
    with pytest.raises(pa.PlanError) as info:
        pa.Plan.from_text("tasks:\n  - {id: a, command: [true]}\n")
    assert "read as a boolean" in str(info.value) and 'quote it, e.g. "true"' in str(info.value)
