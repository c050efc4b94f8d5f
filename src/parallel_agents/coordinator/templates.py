"""Deterministic decompositions: the seeds' project templates and decomposition strategies.

Templates are exact: `--template full_stack` always gives the same tasks, dependencies,
pools and estimates, so a user can predict (and `--show-plan`) what will run. The keyword
analysis (`keyword_tasks`) is the coordinator's own fallback when a model's plan is unusable.

Sources: CoralCollective's execution strategies (full stack, API service, frontend app, with
their phases and minutes), openclaw's restaurant example (frontend, backend and schema in
parallel, the security audit blocked by the backend) and the architecture spec's strategies
(file-based, feature-based, layer-based, analyse-implement-validate).
"""

from __future__ import annotations

import re
from typing import Any

from .distribute import ROLE_POOL

__all__ = ["TEMPLATES", "PROJECT_TYPES", "STRATEGY_TEMPLATES", "template_tasks", "keyword_tasks"]

Spec = dict[str, Any]


def _t(id: str, agent: str, description: str, est: float, deps: tuple[str, ...] = (),
       priority: int = 5, pool: str | None = None) -> Spec:
    return {"id": id, "agent": agent, "pool": pool or ROLE_POOL[agent],
            "description": description, "priority": priority,
            "depends_on": list(deps), "estimated_seconds": float(est)}


def _full_stack(request: str) -> list[Spec]:
    # CoralCollective "Full Stack Application": 6 phases, 2-3 min each; openclaw's security
    # audit (blocked by the backend) joins the integration phase.
    return [
        _t("architecture", "architect", "Define the system architecture: components, "
           "technology choices and how they talk to each other.", 120, priority=10),
        _t("requirements", "researcher", "Write the functional requirements and user stories.",
           120, ("architecture",), priority=10),
        _t("database_schema", "database", "Design the database schema (tables, keys, "
           "indexes) for the requirements.", 120, ("requirements",), priority=7),
        _t("api_spec", "backend", "Specify the HTTP API: endpoints, requests, responses, "
           "errors.", 120, ("requirements",), priority=7),
        _t("ui_mockups", "frontend", "Create the UI mockups: pages, layout and user flows.",
           120, ("requirements",), priority=7),
        _t("backend", "backend", "Implement the backend: the API endpoints and the database "
           "access.", 180, ("database_schema", "api_spec"), priority=7),
        _t("frontend", "frontend", "Implement the frontend: pages, components and state, "
           "calling the API.", 180, ("ui_mockups", "api_spec"), priority=7),
        _t("integration", "backend", "Integrate frontend and backend end to end.", 120,
           ("backend", "frontend")),
        _t("qa", "qa", "Write and run the tests (unit, integration, end to end).", 120,
           ("backend", "frontend")),
        _t("security_audit", "security", "Audit the backend for security issues (CSRF, XSS, "
           "SQL injection, authentication, rate limiting) and list required mitigations.",
           120, ("backend",)),
        _t("deployment", "architect", "Write the deployment configuration and instructions.",
           120, ("integration", "qa", "security_audit"), priority=2),
    ]


def _api(request: str) -> list[Spec]:
    # CoralCollective "API Service": architecture, then spec (2), implementation (2), final (2).
    return [
        _t("architecture", "architect", "Define the API service architecture.", 120,
           priority=10),
        _t("api_design", "backend", "Design the API: resources, endpoints, status codes.", 120,
           ("architecture",), priority=7),
        _t("database_models", "database", "Design the database models and schema.", 120,
           ("architecture",), priority=7),
        _t("backend", "backend", "Implement the API endpoints and data access.", 180,
           ("api_design", "database_models"), priority=7),
        _t("security", "security", "Implement the security layer: authentication, input "
           "validation, rate limiting.", 180, ("api_design", "database_models"), priority=7),
        _t("testing", "qa", "Write and run the API tests.", 120, ("backend", "security")),
        _t("deployment", "architect", "Write the deployment configuration.", 120,
           ("backend", "security"), priority=2),
    ]


def _frontend(request: str) -> list[Spec]:
    # CoralCollective "Frontend Application": planning (2), development (2), polish (2).
    return [
        _t("ui_design", "frontend", "Design the UI: pages, layout, visual style.", 120,
           priority=10),
        _t("frontend_architecture", "architect", "Plan the frontend architecture: "
           "components, state, routing.", 120, priority=10),
        _t("components", "frontend", "Implement the components and pages.", 180,
           ("ui_design", "frontend_architecture"), priority=7),
        _t("accessibility", "frontend", "Make the UI accessible (semantics, keyboard, "
           "contrast, ARIA).", 180, ("ui_design", "frontend_architecture"), priority=7),
        _t("integration", "frontend", "Wire the components together with data and routing.",
           120, ("components", "accessibility")),
        _t("testing", "qa", "Write and run the UI tests.", 120, ("components", "accessibility")),
    ]


def _microservice(request: str) -> list[Spec]:
    # Not spelled out in the seeds beyond its timing (25 -> 10 min); built from the API
    # service phases plus a data store and container deployment.
    return [
        _t("service_design", "architect", "Define the service boundary, its API contract "
           "and its events.", 120, priority=10),
        _t("api_contract", "backend", "Write the API contract (OpenAPI) of the service.", 120,
           ("service_design",), priority=7),
        _t("data_store", "database", "Design the service's own data store and migrations.",
           120, ("service_design",), priority=7),
        _t("service", "backend", "Implement the service.", 180, ("api_contract", "data_store"),
           priority=7),
        _t("security_hardening", "security", "Harden the service: authentication between "
           "services, input validation, secrets handling.", 120, ("api_contract",)),
        _t("tests", "qa", "Write and run the service tests.", 120, ("service",)),
        _t("container_deploy", "architect", "Write the container image and deployment "
           "manifests.", 120, ("service", "security_hardening"), priority=2),
    ]


_FILE_RX = re.compile(r"(?<![\w/.-])([\w./-]+\.(?:py|js|ts|tsx|jsx|go|rs|java|rb|php|c|h|cpp|"
                      r"cs|md|html|css|sql|yaml|yml|json|toml|sh))\b")


def _slug(text: str, limit: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return slug[:limit].strip("_") or "part"


def _files_in(request: str) -> list[str]:
    return list(dict.fromkeys(_FILE_RX.findall(request)))


def _features_in(request: str) -> list[str]:
    """'... with search, filters and dark mode' -> ['search', 'filters', 'dark mode']."""
    m = re.search(r"\b(?:with|including|features?:?|supporting)\s+(.+)$", request,
                  re.IGNORECASE | re.DOTALL)
    if not m:
        return []
    tail = re.split(r"[.;\n]", m.group(1))[0]
    parts = re.split(r",|\band\b|\bplus\b|&", tail)
    out = []
    for p in parts:
        p = re.sub(r"^\s*(?:a|an|the|some)\s+", "", p.strip(), flags=re.IGNORECASE).strip()
        if p and len(p) <= 60:
            out.append(p)
    return out


def _file_based(request: str) -> list[Spec]:
    files = _files_in(request) or ["the code"]
    tasks = [_t(f"file_{_slug(f)}", "codegen", f"Work on {f} for this request: {request}", 60,
                priority=7) for f in files]
    tasks.append(_t("summary", "writer", "Combine the per-file results into one report.", 30,
                    tuple(t["id"] for t in tasks)))
    return tasks


def _feature_based(request: str) -> list[Spec]:
    features = _features_in(request) or ["core feature"]
    tasks = [_t(f"feature_{_slug(f)}", "codegen", f"Implement the feature: {f}.", 120,
                priority=7) for f in features]
    tasks.append(_t("validate_all", "qa", "Validate all features together (tests).", 60,
                    tuple(t["id"] for t in tasks)))
    return tasks


def _layer_based(request: str) -> list[Spec]:
    return [
        _t("backend", "backend", "Backend layer: models, endpoints, middleware.", 120,
           priority=7),
        _t("frontend", "frontend", "UI layer: components, forms, state.", 120, priority=7),
        _t("tests", "qa", "Testing layer: unit, integration and end-to-end tests.", 120),
        _t("docs", "docs", "Documentation layer: API docs and user guide.", 60, priority=2),
    ]


def _phases(request: str) -> list[Spec]:
    return [
        _t("analyze_profile", "researcher", "Analyse: measure the current state and find "
           "the bottlenecks or weaknesses.", 60, priority=7),
        _t("analyze_practices", "researcher", "Analyse: research the best practices that "
           "apply.", 60, priority=7),
        _t("analyze_audit", "security", "Analyse: audit the current state for risks.", 60,
           priority=7),
        _t("implement", "codegen", "Implement the changes the analysis calls for.", 180,
           ("analyze_profile", "analyze_practices", "analyze_audit"), priority=7),
        _t("validate_tests", "qa", "Validate: test that the changes work and regress "
           "nothing.", 60, ("implement",)),
        _t("validate_review", "security", "Validate: review the changes for security.", 60,
           ("implement",)),
    ]


PROJECT_TYPES = {"full_stack": _full_stack, "api": _api, "frontend": _frontend,
                 "microservice": _microservice}
STRATEGY_TEMPLATES = {"file_based": _file_based, "feature_based": _feature_based,
                      "layer_based": _layer_based, "phases": _phases}
TEMPLATES = {**PROJECT_TYPES, **STRATEGY_TEMPLATES}


def template_tasks(name: str, request: str) -> list[Spec]:
    """The template's tasks, each with the request added to its prompt."""
    key = name.strip().lower().replace("-", "_")
    if key not in TEMPLATES:
        from .._exceptions import UsageError

        raise UsageError(f"unknown template {name!r}: use one of {', '.join(TEMPLATES)}")
    tasks = TEMPLATES[key](request)
    for t in tasks:
        t["prompt"] = _prompt(t["description"], request)
    return tasks


def _prompt(description: str, request: str) -> str:
    return f"{description}\n\nThe overall request: {request}"


# -- the keyword analysis ---------------------------------------------------------------
_LAYER_WORDS = {
    "frontend": r"website|web ?site|site|web ?page|page|landing|ui|frontend|front-end|"
                r"dashboard|web ?app|form|portfolio|storefront|mobile",
    "backend": r"api|backend|back-end|server|booking|reservation|order|checkout|payment|"
               r"auth|login|sign ?up|account|cart|admin|endpoint|subscription|newsletter",
    "database": r"database|db|data ?model|schema|storage|persist|booking|reservation|"
                r"order|account|inventory|cart|user|customer|sql",
    "security": r"secure|security|auth|login|password|payment|checkout|booking|reservation|"
                r"account|sign ?up|user data|customer",
    "qa": r"test|tests|tested|qa|quality",
    "docs": r"docs|documentation|readme|manual|guide",
}


def _mentions(pattern: str, text: str) -> bool:
    return re.search(rf"\b(?:{pattern})s?\b", text, re.IGNORECASE) is not None


def keyword_tasks(request: str) -> tuple[list[Spec], str]:
    """The coordinator's own decomposition from the request's words: (tasks, which strategy).

    Software requests are split by layer the way openclaw splits "a restaurant website with
    booking": frontend, backend and schema at once, the security audit after the backend.
    A list of files or of features uses the file- or feature-based strategy. Anything else
    stays one task (the decision step then keeps it serial).
    """
    text = request.strip()
    files = _files_in(text)
    if len(files) >= 2:
        tasks = _file_based(text)
        strategy = "file_based"
    else:
        layers = [name for name in ("frontend", "backend", "database")
                  if _mentions(_LAYER_WORDS[name], text)]
        features = _features_in(text)
        if len(layers) >= 2 or (layers and features and layers != ["frontend"]):
            tasks = _layers(text, layers, features)
            strategy = "layer_based"
        elif len(features) >= 3:
            tasks = _feature_based(text)
            strategy = "feature_based"
        else:
            from .distribute import distribute

            d = distribute(text)
            tasks = [{"id": "main", "agent": d.role, "pool": d.pool,
                      "description": text, "priority": 5, "depends_on": [],
                      "estimated_seconds": 30.0}]
            strategy = "single"
    for t in tasks:
        t.setdefault("prompt", _prompt(t["description"], text))
    return tasks, strategy


def _layers(text: str, layers: list[str], features: list[str]) -> list[Spec]:
    extra = f" Include: {', '.join(features)}." if features else ""
    if "backend" in layers or features:
        layers = list(dict.fromkeys(layers + ["backend"]))
    if "backend" in layers and "database" not in layers and _mentions(
            _LAYER_WORDS["database"], text):
        layers.append("database")
    tasks: list[Spec] = []
    if "frontend" in layers:
        tasks.append(_t("frontend", "frontend", "Build the frontend: the pages, layout, "
                        f"styles and forms (HTML/CSS/JS).{extra}", 45, priority=7))
    if "backend" in layers:
        tasks.append(_t("backend", "backend", "Build the backend: the HTTP API and its "
                        f"handlers, with input validation.{extra}", 90, priority=7))
    if "database" in layers:
        tasks.append(_t("database_schema", "database", "Design the database schema (SQL "
                        f"tables, keys, indexes) for the data this needs.{extra}", 45,
                        priority=7))
    if "backend" in layers and _mentions(_LAYER_WORDS["security"], text):
        tasks.append(_t("security_audit", "security", "Audit the backend for security: "
                        "CSRF, XSS, SQL injection, authentication, rate limiting; list "
                        "the mitigations the code must have.", 60, ("backend",)))
    built = tuple(t["id"] for t in tasks if t["id"] in ("frontend", "backend"))
    if _mentions(_LAYER_WORDS["qa"], text):
        tasks.append(_t("tests", "qa", "Write the tests for what was built.", 60, built))
    if _mentions(_LAYER_WORDS["docs"], text):
        tasks.append(_t("docs", "docs", "Write the documentation (README, usage).", 30, built,
                        priority=2))
    return tasks
