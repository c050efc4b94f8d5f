"""The distributor: scores per pool, role votes, ambiguous tasks go to `general`."""

from __future__ import annotations

from parallel_agents.coordinator import DEFAULT_POOLS, GENERAL_POOL, distribute
from parallel_agents.coordinator.distribute import closest_role


def test_seed_pools_are_the_defaults():
    assert DEFAULT_POOLS["codegen"] == {"max_concurrent": 3, "timeout_sec": 300, "max_retries": 2}
    assert DEFAULT_POOLS["security"] == {"max_concurrent": 2, "timeout_sec": 300,
                                         "max_retries": 2}
    assert DEFAULT_POOLS["database"] == {"max_concurrent": 2, "timeout_sec": 180,
                                         "max_retries": 2}
    assert GENERAL_POOL in DEFAULT_POOLS


def test_scores_are_exposed_with_the_matched_keywords():
    d = distribute("Audit the login for CSRF and XSS vulnerabilities")
    assert d.pool == "security"
    assert set(d.scores) == set(DEFAULT_POOLS)
    assert d.scores["security"] > d.scores["codegen"]
    assert {"csrf", "xss", "audit", "login"} <= set(d.matched["security"])
    assert d.role == "security"
    assert "security scored" in d.reason


def test_the_role_votes_for_its_home_pool():
    text = "Write the booking part"
    assert distribute(text).pool == GENERAL_POOL
    assert distribute(text, role="database").pool == "database"
    assert distribute(text, role="backend").pool == "codegen"


def test_ambiguous_tasks_fall_back_to_the_general_pool():
    d = distribute("Set up the database API")  # codegen: api; database: database
    assert d.pool == GENERAL_POOL
    assert "too close" in d.reason
    nothing = distribute("Make it nice")
    assert nothing.pool == GENERAL_POOL and "ambiguous" in nothing.reason


def test_closest_role_names_how_it_matched():
    assert closest_role("backend") == ("backend", "exact")
    assert closest_role("DBA")[0] == "database"
    assert closest_role("Frontend Developer")[0] == "frontend"
    assert closest_role("securty")[0] == "security"
    role, how = closest_role("wizard", "write the SQL schema")
    assert role == "database" and "text" in how
