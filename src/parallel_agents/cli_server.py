"""`parallel-agents serve`: the HTTP gateway and dashboard."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

__all__ = ["register"]

EXIT_USAGE = 2
TOKEN_ENV = "PARALLEL_AGENTS_TOKEN"  # = server._runner.TOKEN_ENV (not imported: fast CLI)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)


def _parse_sessions(values: list[str]) -> dict[str, str]:
    sessions: dict[str, str] = {}
    for value in values:
        name, sep, secret = value.partition(":")
        if not sep or not name or not secret:
            _fail(f"--session {value!r}: use --session NAME:TOKEN")
        if name in sessions:
            _fail(f"--session {name!r} is given twice")
        sessions[name] = secret
    return sessions


def serve_command(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8000,
    token: Annotated[Optional[str], typer.Option(
        "--token", help=f"Operator token required on every endpoint but /healthz (default: "
        f"${TOKEN_ENV}). Required when --host is not a loopback address.",
        show_default=False)] = None,
    session: Annotated[Optional[list[str]], typer.Option(
        "--session", help="NAME:TOKEN, repeatable: a session token that sees only its own "
        "executions.")] = None,
    store: Annotated[Optional[str], typer.Option(
        "--store", help="Run store file: every execution is a durable run that survives a "
        "restart (default: $PARALLEL_AGENTS_STORE or .parallel_agents/runs.db).",
        show_default=False)] = None,
    no_store: Annotated[bool, typer.Option(
        "--no-store", help="Keep executions in memory only (lost on restart).")] = False,
    max_body_bytes: Annotated[int, typer.Option(
        "--max-body-bytes", min=1024, help="Largest request body accepted.")] = 2 * 1024 * 1024,
    max_tasks: Annotated[int, typer.Option(
        "--max-tasks", min=1, help="Most tasks in one plan.")] = 1000,
    backend: Annotated[str, typer.Option(
        "--backend", help="Where tasks run: local (this process) or ray.")] = "local",
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", help="With --backend ray: the cluster to join (default: start a "
        "local Ray).", show_default=False)] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
    config_file: Annotated[Optional[str], typer.Option(
        "--config", metavar="FILE", help="Config file (default: ./parallel-agents.toml or "
        "$PARALLEL_AGENTS_CONFIG): its defaults.model and [providers.*] serve request texts, "
        "its defaults.store the store.", show_default=False)] = None,
) -> None:
    """Serve the HTTP API (schema at /openapi.json) and the live dashboard (/) for many
    executions at once."""
    from ._exceptions import ParallelAgentsError, UsageError
    from .backends import resolve_backend
    from .cli_coordinator import _planner
    from .config import load_config
    from .coordinator import Coordinator
    from .roles import configure_default_model
    from .server import CoordinatorPlanner, Limits, check_bind, check_tokens, create_app, serve

    token = token or os.environ.get(TOKEN_ENV) or None
    sessions = _parse_sessions(session or [])
    if store is not None and no_store:
        _fail("give --store PATH or --no-store, not both")
    try:
        check_tokens(token, sessions)
        check_bind(host, token, sessions)
    except UsageError as exc:
        _fail(str(exc))
    try:
        config = load_config(config_file)
        configure_default_model(config.get("defaults.model"))
        providers = config.provider_settings()
        # One backend for every execution: a Ray backend starts (or joins) Ray once.
        shared_backend = resolve_backend(backend, ray_address=ray_address)
        # Request texts are planned like `parallel-agents run "..."`: the model named by
        # $PARALLEL_AGENTS_MODEL or the config, or the keyword analysis
        # (PARALLEL_AGENTS_PLANNER=keywords); their tasks reach the config's providers.
        provider, planner_model, _ = _planner(providers)
    except ParallelAgentsError as exc:
        _fail(str(exc))
    planner = CoordinatorPlanner(Coordinator(provider, planner_model=planner_model,
                                             providers=providers))
    run_store = None
    if not no_store:
        from .store import default_store_path

        if store is None and config.source("defaults.store") != "default":
            store = str(config.get("defaults.store"))
        run_store = default_store_path(store)
    try:
        app = create_app(token=token, session_tokens=sessions, planner=planner,
                         run_store=run_store,
                         executor_options={"backend": shared_backend},
                         limits=Limits(max_body_bytes=max_body_bytes, max_tasks=max_tasks))
    except ParallelAgentsError as exc:  # a bad store file: what is wrong, and what to do
        _fail(str(exc))
    shown = f"[{host}]" if ":" in host else host
    auth = " (paste your token in the page, or open it with #token=YOUR_TOKEN)" \
        if token or sessions else ""
    typer.echo(f"dashboard: http://{shown}:{port}/{auth}", err=True)
    typer.echo(f"schema:    http://{shown}:{port}/openapi.json", err=True)
    typer.echo(f"store:     {run_store if run_store is not None else 'in memory (--no-store)'}",
               err=True)
    serve(app, host, port, log_level=log_level)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
