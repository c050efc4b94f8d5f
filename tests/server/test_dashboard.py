"""The dashboard in real headless Chromium (Debian's chromium, driven by Playwright).

Playwright's own browser downloads are never used: `executable_path` points at the system
chromium (CI installs it with apt). The page starts a run of command tasks, the Gantt bars
grow while the tasks run, and a screenshot is saved in the test's tmp dir.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from http_support import TOKEN, plan_of, sleep_task
from playwright.sync_api import Page, expect, sync_playwright

from parallel_agents.server import ServerThread, create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]


@pytest.fixture(scope="module")
def page_server() -> Iterator[ServerThread]:
    with ServerThread(create_app(token=TOKEN)) as srv:
        yield srv


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    assert Path(CHROMIUM).exists(), "install Debian's chromium: apt-get install -y chromium"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        yield page
        browser.close()


def bar_fraction(page: Page, task: str) -> float:
    """The bar's width as a fraction of its track, measured in one go (the page redraws)."""
    return page.evaluate("""task => {
        const row = document.querySelector(`.row[data-task="${task}"]`);
        const bar = row.querySelector(".bar"), track = row.querySelector(".track");
        return bar.getBoundingClientRect().width / track.getBoundingClientRect().width;
    }""", task)


def test_dashboard_runs_a_plan_and_draws_a_live_gantt(page: Page, page_server: ServerThread,
                                                      tmp_path: Path) -> None:
    page.goto(f"{page_server.url}/#token={TOKEN}")
    plan = plan_of(
        sleep_task("schema", 1.5, estimated_seconds=1.5),
        sleep_task("frontend", 3.0, estimated_seconds=3),
        sleep_task("backend", 2.0, depends_on=["schema"], estimated_seconds=2),
        sleep_task("audit", 1.0, depends_on=["backend"], estimated_seconds=1),
    )
    page.click("#new-run summary")
    page.fill("#plan-text", json.dumps(plan))
    page.click("#start-run")

    # The time axis is the predicted makespan (4.5 s) until the run outlasts it.
    expect(page.locator("#figures")).to_contain_text("4.5 s", timeout=20_000)
    expect(page.locator('.row[data-task="frontend"] .bar')).to_have_count(1, timeout=20_000)
    first = bar_fraction(page, "frontend")
    time.sleep(1.0)
    later = bar_fraction(page, "frontend")
    assert later > first, f"running bar did not grow ({first:.2f} -> {later:.2f} of the axis)"
    assert first < 0.9, "a running bar should not span the whole axis"
    expect(page.locator("#exec-status")).to_have_text("running")
    page.screenshot(path=str(tmp_path / "running.png"))

    expect(page.locator("#exec-status")).to_have_text("succeeded", timeout=30_000)
    expect(page.locator(".bar.succeeded")).to_have_count(4)
    # backend starts after schema ends: its bar begins right of schema's.
    # Measured in one page-side evaluation: the page re-renders rows as events arrive, so
    # a bar queried in one call can be detached (left 0) by the next.
    page.wait_for_function("""() => {
        const left = t => {
            const bar = document.querySelector(`.row[data-task="${t}"] .bar`);
            return bar && bar.isConnected ? bar.getBoundingClientRect().left : -1;
        };
        const s = left("schema"), b = left("backend"), a = left("audit");
        return s >= 0 && s < b && b < a;
    }""", timeout=10_000)
    expect(page.locator("#figures")).to_contain_text("speedup")
    expect(page.locator("#figures")).to_contain_text("x")  # the speedup has arrived

    page.click('.row[data-task="audit"]')
    expect(page.locator("#task-detail .output")).to_contain_text("done audit")
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}", file=sys.stderr)


def test_dashboard_cancel_button_stops_a_run(page: Page, page_server: ServerThread) -> None:
    with httpx.Client(base_url=page_server.url,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        eid = api.post("/api/execute-parallel",
                       json={"plan": plan_of(sleep_task("slow", 60))}).json()["execution_id"]
    page.goto(f"{page_server.url}/#token={TOKEN}")
    page.click(f'#executions li[data-id="{eid}"]')
    expect(page.locator('.row[data-task="slow"] .bar')).to_have_count(1, timeout=20_000)
    page.click("#cancel")
    expect(page.locator("#exec-status")).to_have_text("cancelled", timeout=30_000)
    expect(page.locator(".bar.cancelled")).to_have_count(1)


def test_dashboard_shows_the_coordinators_answer(page: Page, tmp_path: Path) -> None:
    from parallel_agents.coordinator import Coordinator
    from parallel_agents.providers.base import FunctionProvider
    from parallel_agents.server import CoordinatorPlanner

    app = create_app(token=TOKEN,
                     planner=CoordinatorPlanner(Coordinator(model="scripted:m"), tmp_path),
                     executor_options={"providers": {
                         "scripted": FunctionProvider(lambda r: "Delivered <b>as text</b>.")}})
    with ServerThread(app) as srv, httpx.Client(
            base_url=srv.url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        eid = api.post("/api/execute-parallel", json={
            "message": "Create index.html and app.js"}).json()["execution_id"]
        page.goto(f"{srv.url}/#token={TOKEN}")
        page.click(f'#executions li[data-id="{eid}"]')
        expect(page.locator("#exec-status")).to_have_text("succeeded", timeout=30_000)
        answer = page.locator("#final-response")
        expect(answer).to_contain_text("# Done", timeout=20_000)
        expect(answer).to_contain_text("Delivered <b>as text</b>.")  # text, never HTML


def test_dashboard_ends_attempts_a_crash_cut_off_when_the_run_resumes(
        page: Page, page_server: ServerThread) -> None:
    """A resumed run's events start again with run_started: the Gantt keeps the first start
    as its origin and ends the attempts left open at the moment the run stopped."""
    page.goto(f"{page_server.url}/#token={TOKEN}")
    attempts = page.evaluate("""() => {
        const ex = { id: "x", status: "running", t0: null, tasks: {}, order: [], info: null };
        const events = [
            { kind: "run_started", time: 100 },
            { kind: "task_started", task_id: "a", attempt: 1, time: 101 },
            { kind: "task_started", task_id: "b", attempt: 1, time: 101 },
            { kind: "task_succeeded", task_id: "b", attempt: 1, time: 102 },
            { kind: "run_started", time: 160, data: { resumed: true, idle: [104, 160] } },
            { kind: "task_started", task_id: "a", attempt: 2, time: 160.5 },
        ];
        for (const ev of events) onEvent(ex, ev);
        return { t0: ex.t0, a: ex.tasks.a.attempts, b: ex.tasks.b.attempts };
    }""")
    assert attempts["t0"] == 100
    assert attempts["a"] == [{"start": 101, "end": 104, "outcome": "interrupted"},
                             {"start": 160.5, "end": None, "outcome": "running"}]
    assert attempts["b"] == [{"start": 101, "end": 102, "outcome": "succeeded"}]
