"""Whatever a model answers, the repaired plan is valid (property test)."""

from __future__ import annotations

import asyncio
import json

from coord_helpers import planner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from parallel_agents.coordinator import decompose, to_plan
from parallel_agents.coordinator.decompose import repair_tasks

ids = st.sampled_from(["a", "b", "c", "A", "a b", "", "../x", "api", "api", "1", 2, None])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True), st.text(max_size=12))
raw_task = st.one_of(
    st.fixed_dictionaries({}, optional={
        "id": ids, "name": ids,
        "agent": st.one_of(st.sampled_from(["backend", "dba", "wizard", "", "Security"]),
                           scalars),
        "description": st.one_of(st.text(max_size=30), scalars),
        "depends_on": st.one_of(st.lists(ids, max_size=4), ids, scalars),
        "priority": scalars, "estimated_seconds": st.one_of(scalars, st.just("2 min")),
    }),
    st.text(max_size=20), scalars, st.lists(st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(raw_task, max_size=12))
@example([{"id": "a", "priority": "INFINITY"}])  # found by this test
@example([{"id": "a", "priority": float("-inf"), "estimated_seconds": float("inf")}])
def test_repaired_tasks_always_build_a_valid_plan(raw):
    tasks, repairs, dist = repair_tasks(raw, "Build a shop")
    plan = to_plan({"name": "p", "pools": {"codegen": {}, "security": {}, "database": {},
                                           "general": {}}, "tasks": tasks},
                   run_task=lambda spec, ctx: None)
    assert len(plan.tasks) == len(tasks) <= len(raw)
    assert set(dist) == {t["id"] for t in tasks}
    for t in tasks:
        assert 0 <= t["priority"] <= 10 and 0 < t["estimated_seconds"] <= 3600


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200),
                 st.lists(raw_task, max_size=6).map(lambda ts: json.dumps(
                     {"tasks": ts}, default=str)[: len(json.dumps({"tasks": ts},
                                                                  default=str)) * 3 // 4])))
def test_any_answer_gives_a_valid_decomposition(text):
    d = asyncio.run(decompose("Build a restaurant website with booking", planner(text)))
    to_plan(d.plan, run_task=lambda spec, ctx: None)
    assert len(d.tasks) >= 3 and len({t["pool"] for t in d.tasks}) >= 2
