"""One request over HTTP answered by the REAL embedded model (SmolLM2 via llama.cpp), offline.

Slow (one model call of a few seconds to a minute on 2 cores), hence marked; the other
gateway tests script the model.
"""

from __future__ import annotations

import httpx
import pytest

from parallel_agents.coordinator import Coordinator
from parallel_agents.server import CoordinatorPlanner, ServerThread, create_app

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_chat_answers_serially_on_the_local_model(tmp_path, monkeypatch) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    # The keyword analysis plans (instant); the one task runs on the local model.
    coordinator = Coordinator(model="local:smollm2", task_defaults={"max_iterations": 2})
    app = create_app(planner=CoordinatorPlanner(coordinator, runs_dir=tmp_path))
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=900) as c:
        body = c.post("/api/chat", json={"message": "Explain what a REST API is"}).json()
    assert body["mode"] == "serial", body
    assert body["execution_id"] and body["response"]
    assert body["status"] in ("succeeded", "failed")  # a 135M model may botch its answer
    # Either way the answer says what happened, in the coordinator's words.
    assert body["response"].startswith(("# Done", "# Not delivered", "# Partial"))
