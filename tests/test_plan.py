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


def test_empty_plan_built_in_python_is_valid_and_succeeds_at_once() -> None:
    # The coordinator's streaming planner starts from an empty plan and grows it.
    for plan in (pa.Plan(), pa.Plan.from_dict({"tasks": []}, allow_empty=True)):
        assert len(plan) == 0
        result = pa.run(plan)
        assert result.status == "succeeded"
        assert result.tasks == {}
        assert result.makespan_seconds < 1.0


@pytest.mark.parametrize("text", ["", "tasks: []\n", "name: x\n", "tasks:\n"])
def test_a_plan_file_without_tasks_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    with pytest.raises(pa.PlanError) as info:
        pa.Plan.from_file(path)
    assert str(info.value) == (f"invalid plan in {path}: 1 problem\n"
                               "  - the plan has no tasks; add at least one under tasks:")
    with pytest.raises(pa.PlanError, match="the plan has no tasks"):
        pa.Plan.from_dict({"name": "x"})
    # Reported together with the other problems.
    with pytest.raises(pa.PlanError) as info:
        pa.Plan.from_dict({"nme": "x", "tasks": []})
    assert len(info.value.problems) == 2


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


@pytest.mark.parametrize("command, shown", [(5, "got 5"), (True, "got True"),
                                            ({"a": 1}, "got dict")])
def test_command_of_the_wrong_type_is_a_problem_not_a_crash(command: object, shown: str) -> None:
    with pytest.raises(pa.PlanError) as info:
        pa.Plan.from_dict({"tasks": [{"id": "b", "command": command}]})
    found = problems_of(info.value)
    assert "must be a list of strings (the program and its arguments) or a string" in \
        found["tasks[0] (b).command"]
    assert shown in found["tasks[0] (b).command"]


@pytest.mark.parametrize(
    "yaml_text, location",
    [
        ("tasks: [{id: a, command: [x], estimated_seconds: 1e400}]",
         "tasks[0] (a).estimated_seconds"),
        ("tasks: [{id: a, command: [x], timeout_sec: .inf}]", "tasks[0] (a).timeout_sec"),
        ("tasks: [{id: a, command: [x], timeout_sec: .nan}]", "tasks[0] (a).timeout_sec"),
        ("tasks: [{id: a, command: [x], retry_backoff_sec: .inf}]",
         "tasks[0] (a).retry_backoff_sec"),
        ("pools: {p: {timeout_sec: .nan}}\ntasks: [{id: a, command: [x], pool: p}]",
         "pools.p.timeout_sec"),
        ("pools: {p: {retry_backoff_sec: .inf}}\ntasks: [{id: a, command: [x], pool: p}]",
         "pools.p.retry_backoff_sec"),
        ("budget_usd: .inf\ntasks: [{id: a, command: [x]}]", "budget_usd"),
        ("prices: {'openai:m': {input_per_mtok: .nan, output_per_mtok: 1}}\n"
         "tasks: [{id: a, command: [x]}]", "prices.openai:m.input_per_mtok"),
        ("providers: {openai: {timeout_sec: .inf}}\ntasks: [{id: a, command: [x]}]",
         "providers.openai.timeout_sec"),
        ("roles: {r: {system_prompt: s, temperature: .nan}}\ntasks: [{id: a, command: [x]}]",
         "roles.r.temperature"),
    ],
)
def test_every_float_must_be_finite(yaml_text: str, location: str) -> None:
    with pytest.raises(pa.PlanError) as info:
        pa.Plan.from_text(yaml_text)
    found = problems_of(info.value)
    assert "finite number" in found[location], found


def test_json_infinity_nan_and_huge_numbers_are_refused() -> None:
    with pytest.raises(pa.PlanError, match="finite number"):
        pa.Plan.from_text('{"tasks": [{"id": "a", "command": ["x"], "timeout_sec": Infinity}]}',
                          fmt="json")
    with pytest.raises(pa.PlanError, match="finite number"):
        pa.Plan.from_text('{"tasks": [{"id": "a", "command": ["x"], "estimated_seconds": 1e400}]}',
                          fmt="json")


def test_cross_task_checks_run_despite_field_errors() -> None:
    data = {"tasks": [
        {"id": "backend", "command": ["x"], "max_retries": "lots", "timeout_sec": -1},
        {"id": "audit", "command": ["x"], "depends_on": ["backnd"]},
        {"id": "deploy", "command": ["x"], "pool": "nopool"},
        # A task with a bad field still has its own dependencies, pool and role checked ...
        {"id": "docs", "command": ["x"], "priority": "urgent", "depends_on": ["audt"],
         "pool": "gpu"},
        {"id": "llm", "agent": "nobody", "prompt": "p", "max_tokens": 0},
        # ... and counts for duplicate ids and cycles.
        {"id": "docs", "command": ["x"], "estimated_seconds": 0},
        {"id": "c1", "command": ["x"], "depends_on": "c2", "timeout_sec": 0},
        {"id": "c2", "command": ["x"], "depends_on": "c1"},
    ]}
    with pytest.raises(pa.PlanError) as info:
        pa.Plan.from_dict(data)
    found = problems_of(info.value)
    assert "unknown task 'backnd'; did you mean 'backend'?" in found["tasks[1] (audit).depends_on"]
    assert "unknown pool 'nopool'" in found["tasks[2] (deploy).pool"]
    assert "unknown priority" in found["tasks[3] (docs).priority"]
    assert "unknown task 'audt'; did you mean 'audit'?" in found["tasks[3] (docs).depends_on"]
    assert "unknown pool 'gpu'" in found["tasks[3] (docs).pool"]
    assert "unknown role 'nobody'" in found["tasks[4] (llm).agent"]
    assert "duplicate task id 'docs' (first used by tasks[3])" in found["tasks[5] (docs)"]
    assert "c1 -> c2 -> c1" in found["tasks"] or "c2 -> c1 -> c2" in found["tasks"]
    assert len(info.value.problems) == 13


def test_locations_count_tasks_that_failed_validation() -> None:
    # The unknown role is in the file's tasks[1], though tasks[0] did not validate.
    with pytest.raises(pa.PlanError) as info:
        pa.Plan.from_dict({"tasks": [{"id": "a", "command": []},
                                     {"id": "b", "agent": "nobody", "prompt": "p"}]})
    assert "tasks[1] (b).agent" in problems_of(info.value)


def test_plan_settings_with_errors_still_serve_the_task_checks() -> None:
    # budget_usd is bad; the plan's own role is still known, so `writer2` is not "unknown".
    with pytest.raises(pa.PlanError) as info:
        pa.Plan.from_dict({"budget_usd": "x", "roles": {"writer2": {"system_prompt": "w"}},
                           "tasks": [{"id": "a", "agent": "writer2", "prompt": "p"}]})
    assert list(problems_of(info.value)) == ["budget_usd"]


@pytest.mark.parametrize(
    "text, key, line",
    [
        ("tasks: [{id: a, command: [x]}]\ntasks: [{id: b, command: [x]}]\n", "'tasks'", 2),
        ("tasks:\n  - id: a\n    command: [x]\n    id: b\n", "'id'", 4),
        ("pools:\n  p: {max_concurrent: 1, max_concurrent: 2}\ntasks: [{id: a, command: [x]}]\n",
         "'max_concurrent'", 2),
    ],
)
def test_duplicate_yaml_keys_are_refused_with_their_line(tmp_path: Path, text: str, key: str,
                                                         line: int) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    with pytest.raises(pa.PlanError) as info:
        pa.Plan.from_file(path)
    message = str(info.value)
    assert f"in {path}" in message and f"line {line} column" in message
    assert f"duplicate key {key}" in message


def test_duplicate_keys_through_the_config_loader_and_in_json(tmp_path: Path) -> None:
    from parallel_agents.config import load_config, load_plan

    config_file = tmp_path / "parallel-agents.toml"
    config_file.write_text("[pools.gpu]\nmax_concurrent = 1\n")
    plan = tmp_path / "plan.yaml"
    plan.write_text("tasks: [{id: a, command: [x]}]\ntasks: [{id: b, command: [x]}]\n")
    with pytest.raises(pa.PlanError, match="line 2 column 1: invalid YAML: duplicate key 'tasks'"):
        load_plan(plan, load_config(str(config_file)))
    with pytest.raises(pa.PlanError, match="invalid JSON: duplicate key 'id'"):
        pa.Plan.from_text('{"tasks": [{"id": "a", "id": "b", "command": ["x"]}]}', fmt="json")


def test_yaml_merge_keys_may_still_override() -> None:
    # `<<: *anchor` then the same key is how YAML overrides a merged value: not a duplicate.
    plan = pa.Plan.from_text("tasks:\n  - &t {id: a, command: [x], priority: 2}\n"
                             "  - {<<: *t, id: b, priority: 9}\n")
    assert plan.task("b").priority == 9 and plan.task("b").command == ("x",)


def test_pipeline_stage_problems_are_reported_with_the_rest() -> None:
    data = {"strategy": "pipeline", "stages": ["build", "test"], "tasks": [
        {"id": "a", "command": ["x"], "stage": "biuld"},
        {"id": "b", "command": ["x"], "stage": "test", "timeout_sec": 0},
        {"id": "c", "command": ["x"]},
    ]}
    with pytest.raises(pa.PlanError) as info:
        pa.Plan.from_dict(data, source="plan.yaml")
    found = problems_of(info.value)
    assert found["tasks[0] (a).stage"] == ("stage 'biuld' is not listed in `stages` "
                                           "(build, test); did you mean 'build'?")
    assert "needs a stage" in found["tasks[2] (c).stage"]
    assert "greater than 0" in found["tasks[1] (b).timeout_sec"]
    assert str(info.value).startswith("invalid plan in plan.yaml: 3 problems")


def test_env_values_numbers_and_booleans_become_text_others_are_refused() -> None:
    plan = pa.Plan.from_text("tasks:\n  - id: a\n    command: [x]\n"
                             "    env: {PORT: 8080, RATIO: 0.5, DEBUG: true, NAME: web}\n")
    assert plan.task("a").env == {"PORT": "8080", "RATIO": "0.5", "DEBUG": "true", "NAME": "web"}
    with pytest.raises(pa.PlanError) as info:
        pa.Plan.from_text("tasks:\n  - id: a\n    command: [x]\n"
                          "    env: {LIST: [abc, def], MAP: {k: v}, NONE: null, NUL: \"a\\0b\"}\n")
    message = problems_of(info.value)["tasks[0] (a).env"]
    assert "LIST: a list is not an environment value" in message
    assert "MAP: a mapping is not an environment value" in message
    assert "NONE: no value (null)" in message
    assert "NUL: the value contains a NUL byte" in message


@pytest.mark.parametrize(
    "data, location, fragment",
    [
        ({"tasks": [{"id": "nul\u0000x", "command": ["x"]}]}, "tasks[0] (nul\\x00x).id",
         "control character '\\x00'"),
        ({"tasks": [{"id": "", "command": ["x"]}]}, "tasks[0] ().id", "task id is empty"),
        ({"tasks": [{"id": "a\nb", "command": ["x"]}]}, "tasks[0] (a\\nb).id",
         "control character"),
        ({"tasks": [{"id": "a", "command": ["x"], "pool": "g\u0007"}]}, "tasks[0] (a).pool",
         "pool name 'g\\x07' contains the control character"),
        ({"tasks": [{"id": "a", "command": ["x"], "pool": ""}]}, "tasks[0] (a).pool",
         "pool name is empty"),
        ({"pools": {"g\u0000": {}}, "tasks": [{"id": "a", "command": ["x"]}]}, "pools",
         "pool name 'g\\x00' contains the control character"),
        ({"tasks": [{"id": "a", "command": ["x"], "stage": "s\u001b"}]}, "tasks[0] (a).stage",
         "stage name 's\\x1b' contains the control character"),
        ({"stages": ["", "b"], "tasks": [{"id": "a", "command": ["x"]}]}, "stages",
         "stage name is empty"),
    ],
)
def test_names_with_control_characters_or_empty_are_refused(data: dict, location: str,
                                                            fragment: str) -> None:
    with pytest.raises(pa.PlanError) as info:
        pa.Plan.from_dict(data)
    found = problems_of(info.value)
    assert location in found, found
    assert fragment in found[location]
    with pytest.raises(ValueError, match="control character"):
        pa.Task(id="nul\u0000x", command=["x"])
