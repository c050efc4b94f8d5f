"""`llm` tasks: a role's system prompt, the task prompt and the dependencies' outputs, then a
tool loop (workspace file tools + user Python tools) of at most `max_iterations` calls.

The agent never retries: a provider failure propagates as `ProviderError` (retryable or not)
and the engine decides, with its backoff and the server's Retry-After. Every call first
reserves its worst-case cost from the run's budget, so parallel tasks cannot overspend it.

Safeguards for small models (docs/llm-agents.md, "Loop safeguards"): a repeated identical tool
call is answered from the first one's result instead of running again, and it - or two
iterations of failing calls - makes the next iteration offer no tools, so the model answers;
a free-text answer that is tool-call JSON is asked again once without the tool turns, and
never returned as JSON; a prose answer cut off at max_tokens is kept (noted in the event).
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._core._budget import BUDGET_EXHAUSTED
from .._exceptions import NonRetryableError, ParallelAgentsError
from ..pricing import PriceTable, estimate_prompt_tokens
from ..providers.base import (
    ChatRequest,
    ChatResponse,
    Message,
    Provider,
    ProviderError,
    Usage,
    split_model,
)
from ..roles import LLMSettings, llm_settings
from . import Agent, TaskContext, TaskOutput
from .tools import Tool, Workspace, WorkspaceError, as_tool, workspace_tools

if TYPE_CHECKING:
    from ..plan import Plan, Task

__all__ = ["LLMAgent", "resolve_provider", "build_messages", "call_identity", "DEPENDENCY_CHARS",
           "start_cost", "BUILTIN_PROVIDERS"]

log = logging.getLogger("parallel_agents")

#: Dependency outputs share this many characters of the prompt; each gets an equal share
#: (at least 1,000) with the head and tail kept. Bounded so the budget gate can compute
#: a task's worst-case first call before its dependencies have run.
DEPENDENCY_CHARS = 12_000
MIN_DEPENDENCY_CHARS = 1_000
BUILTIN_PROVIDERS = ("local", "openai", "anthropic")


def resolve_provider(spec: str, plan_providers: Mapping[str, Any] | None = None,
                     injected: Mapping[str, Provider] | None = None, *,
                     record_dir: str | Path | None = None,
                     replay_dir: str | Path | None = None) -> tuple[Provider, str, str | None]:
    """`PROVIDER:MODEL` -> (provider, the spec it actually runs as, a note if it fell back).

    Providers given to the Executor win (tests, custom backends); otherwise the provider
    registry builds one from the plan's `providers:` settings and the environment (and may
    fall back to the embedded `local:` model when a remote one has no key or server).
    """
    name, model = split_model(spec)
    if injected and name in injected:
        provider = injected[name]
        if record_dir is not None or replay_dir is not None:
            try:
                from ..providers import replay
            except ImportError as exc:
                raise ProviderError(f"record/replay is not available in this build ({exc})",
                                    retryable=False, provider=name) from None

            provider = (replay.ReplayProvider(replay_dir, name) if replay_dir is not None
                        else replay.RecordingProvider(provider, record_dir, name))
        return provider, spec, None
    try:
        from ..providers.registry import resolve
    except ImportError as exc:
        raise ProviderError(
            f"cannot use model {spec!r}: the provider registry is not available ({exc}); "
            "pass a provider to Executor(providers={...})",
            retryable=False, provider=name) from None
    config = {k: (v.model_dump(exclude_none=True) if hasattr(v, "model_dump") else v)
              for k, v in (plan_providers or {}).items()}
    try:
        res = resolve(spec, config, record_dir=record_dir, replay_dir=replay_dir)
    except ProviderError:
        raise
    except (ParallelAgentsError, ValueError, ImportError, OSError) as exc:
        # A configuration problem: retrying cannot fix it.
        raise ProviderError(f"cannot use model {spec!r}: {exc}", retryable=False,
                            provider=name) from None
    return res.provider, f"{res.provider_name}:{res.model}", res.fallback


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    except (TypeError, ValueError):
        return str(value)


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    marker = f"\n[... {len(text) - limit} characters cut ...]\n"
    keep = max(0, limit - len(marker))
    head = keep * 2 // 3
    return text[:head] + marker + text[len(text) - (keep - head):]


def _dependency_block(inputs: Mapping[str, Any]) -> str:
    if not inputs:
        return ""
    share = max(MIN_DEPENDENCY_CHARS, DEPENDENCY_CHARS // len(inputs))
    parts = ["", "Results of the tasks this one depends on:"]
    for dep, value in inputs.items():
        parts.append(f"\n### {dep}\n{_clip(_as_text(value).strip(), share)}")
    return "\n".join(parts)


def build_messages(task: Task, settings: LLMSettings, inputs: Mapping[str, Any]) -> list[Message]:
    """The conversation a task starts with: role system prompt, then prompt + dependencies."""
    prompt = task.prompt or task.description or ""
    user = prompt + _dependency_block(inputs)
    if task.output_schema is not None:
        user += ("\n\nAnswer with a single JSON value matching this JSON schema:\n"
                 + json.dumps(task.output_schema, separators=(",", ":")))
    return [Message("system", settings.system_prompt), Message("user", user)]


def call_identity(task: Task, plan: Plan | None, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """What an LLM task's answer depends on beyond its own fields, for the result cache: the
    messages it starts with (its role's system prompt, its prompt or description, the
    dependencies' outputs as sent), the model it really calls (a task naming none gets the
    run's default) with the settings it is called with, and where that provider is."""
    settings = llm_settings(task, plan)
    identity: dict[str, Any] = {
        "model": settings.model, "max_iterations": settings.max_iterations,
        "max_tokens": settings.max_tokens, "temperature": settings.temperature,
        "messages": [[m.role, m.content] for m in build_messages(task, settings, inputs)],
    }
    provider = split_model(settings.model)[0]
    where = plan.providers.get(provider) if plan is not None else None
    if where is not None:  # another server (or model file) under the same name
        identity["provider"] = {"base_url": where.base_url, "model_path": where.model_path}
    return identity


def _tool_list(task: Task, workspace: Workspace) -> list[Tool]:
    tools = workspace_tools(workspace)
    names = {t.name for t in tools}
    for fn in task.tools:
        t = as_tool(fn)
        if t.name in names:
            raise NonRetryableError(f"task {task.id!r}: tool name {t.name!r} is used twice "
                                    "(read_file, write_file and list_files are built in)")
        names.add(t.name)
        tools.append(t)
    return tools


def start_cost(task: Task, plan: Plan, prices: PriceTable) -> float | None:
    """Worst-case USD of a task's first call, before its dependencies have run: the full
    dependency allowance counts as sent. None if the model has no known price."""
    settings = llm_settings(task, plan)
    deps = {d: "x" * (DEPENDENCY_CHARS // max(1, len(task.depends_on)) + MIN_DEPENDENCY_CHARS)
            for d in task.depends_on}
    messages = build_messages(task, settings, deps)
    ws_specs = [t.spec() for t in workspace_tools(Workspace(Path(".")))]
    user_specs = [as_tool(fn).spec() for fn in task.tools]
    request = ChatRequest(model=settings.model, messages=messages, tools=ws_specs + user_specs,
                          max_tokens=settings.max_tokens, json_schema=task.output_schema)
    return prices.worst_case(settings.model, estimate_prompt_tokens(request), settings.max_tokens)


class LLMAgent(Agent):
    """Runs `llm` tasks. See the module docstring.

    **Parameters:**

    * **providers** - providers by name (the `PROVIDER` of `PROVIDER:MODEL`), used before the
      registry; tests pass a `FunctionProvider` here.
    * **record_dir** / **replay_dir** - record calls to cassettes, or answer from them.
    """

    def __init__(self, providers: Mapping[str, Provider] | None = None, *,
                 record_dir: str | Path | None = None,
                 replay_dir: str | Path | None = None) -> None:
        self.providers = providers if providers is not None else {}
        self.record_dir = record_dir
        self.replay_dir = replay_dir
        self._temp_dirs: dict[str, Path] = {}

    def _workspace(self, ctx: TaskContext) -> Workspace:
        if ctx.workspace is not None:
            root = Path(ctx.workspace)
            root.mkdir(parents=True, exist_ok=True)
            return Workspace(root)
        root = self._temp_dirs.get(ctx.run_id)
        if root is None:
            root = Path(tempfile.mkdtemp(prefix=f"parallel-agents-{ctx.run_id}-"))
            self._temp_dirs[ctx.run_id] = root
            log.warning("no workspace configured: LLM tasks of run %s write to %s",
                        ctx.run_id, root)
        ctx.progress(f"no workspace configured: files go to the temporary folder {root}")
        return Workspace(root)

    async def run(self, task: Task, ctx: TaskContext) -> TaskOutput:
        plan: Plan | None = getattr(ctx, "plan", None)
        budget = getattr(ctx, "budget", None)
        settings = llm_settings(task, plan)
        prices = PriceTable(plan.prices if plan else None)
        provider, runs_as, fallback = resolve_provider(
            settings.model, plan.providers if plan else None, self.providers,
            record_dir=self.record_dir, replay_dir=self.replay_dir)
        if fallback:
            ctx.progress(fallback)
        # Registry-built remote clients belong to this event loop and this task; providers
        # the caller passed in are the caller's to close.
        owned = split_model(settings.model)[0] not in self.providers
        try:
            return await self._loop(task, ctx, settings, provider, runs_as, budget, prices)
        finally:
            if owned:
                try:
                    await provider.aclose()
                except Exception:  # noqa: BLE001 - closing must not turn success into failure
                    log.debug("closing provider for %s failed", settings.model, exc_info=True)

    async def _loop(self, task: Task, ctx: TaskContext, settings: LLMSettings,
                    provider: Provider, runs_as: str, budget: Any,
                    prices: PriceTable) -> TaskOutput:
        model_name = split_model(runs_as)[1]
        workspace = self._workspace(ctx)
        tools = _tool_list(task, workspace)
        by_name = {t.name: t for t in tools}
        messages = build_messages(task, settings, ctx.inputs)
        usage = Usage()
        cost = 0.0
        calls = 0
        input_scale = 1.0
        text = ""
        # (tool, canonical arguments) -> result: a repeated call is answered from here
        done_calls: dict[str, str] = {}
        force_answer = False  # set when the model stopped making progress with its tools
        idle = 0  # iterations in a row whose calls were all errors

        async def complete(request: ChatRequest, key: tuple[str, int, Any]) -> ChatResponse:
            nonlocal usage, cost, calls, input_scale
            estimate = estimate_prompt_tokens(request)
            if budget is not None:
                worst = prices.worst_case(runs_as, math.ceil(estimate * input_scale),
                                          request.max_tokens) or 0.0
                budget.release(task.id)  # the start reservation becomes this call's
                if not budget.try_reserve(key, worst):
                    raise NonRetryableError(
                        f"{BUDGET_EXHAUSTED}: call {key[2]} of task {task.id!r} may "
                        f"cost up to ${worst:.6f} and ${budget.remaining:.6f} is left")
            try:
                response = await provider.complete(request)
            except BaseException as exc:
                paid = getattr(exc, "usage", None)
                if isinstance(paid, Usage) and (paid.input_tokens or paid.output_tokens):
                    # Answered and billed, but unusable: it counts, in the budget too.
                    calls += 1
                    call_cost = prices.cost(runs_as, paid)
                    if budget is not None:
                        budget.settle(key, call_cost)
                    usage = usage + paid
                    cost += call_cost
                elif budget is not None:
                    budget.release(key)
                raise
            calls += 1
            if response.usage.input_tokens > estimate * input_scale:
                # The tokenizer counts more than our estimate: scale later estimates so
                # only this one call can have overshot its reservation.
                input_scale = response.usage.input_tokens / max(1, estimate)
            call_cost = prices.cost(runs_as, response.usage)
            if budget is not None:
                budget.settle(key, call_cost)
            usage = usage + response.usage
            cost += call_cost
            return response

        try:
            for iteration in range(1, settings.max_iterations + 1):
                last = iteration == settings.max_iterations or force_answer
                request = ChatRequest(
                    model=model_name, messages=list(messages),
                    # The last iteration offers no tools, so the model has to answer.
                    tools=[] if last else [t.spec() for t in tools],
                    max_tokens=settings.max_tokens, temperature=settings.temperature,
                    json_schema=task.output_schema,
                )
                response = await complete(request, (task.id, ctx.attempt, iteration))
                text = response.text
                cut = (" - answer cut off at max_tokens, kept as it is"
                       if response.finish_reason == "length" and not response.tool_calls
                       else "")
                ctx.progress(
                    f"iteration {iteration}/{settings.max_iterations}: "
                    + (", ".join(c.name for c in response.tool_calls) if response.tool_calls
                       else "answered")
                    + f" ({response.usage.input_tokens}+{response.usage.output_tokens} tokens)"
                    + cut,
                    iteration / settings.max_iterations,
                )
                if not response.tool_calls or last:
                    break
                messages.append(Message("assistant", response.text,
                                        tool_calls=list(response.tool_calls)))
                repeats = errors = 0
                for call in response.tool_calls:
                    signature = _call_signature(call.name, call.arguments)
                    if signature in done_calls:
                        # Not run again: small models re-issue the same call until the
                        # iterations run out, re-sending an ever longer prompt.
                        repeats += 1
                        result = (f"You already called {call.name} with these arguments; "
                                  f"the result was:\n{done_calls[signature]}\n"
                                  "Do not call it again: give your final answer now.")
                    else:
                        t = by_name.get(call.name)
                        result = (await t.call(call.arguments) if t is not None else
                                  f"error: unknown tool {call.name!r}; available: "
                                  + ", ".join(by_name))
                        done_calls[signature] = result
                        if result.startswith("error:"):
                            errors += 1
                    messages.append(Message("tool", result, tool_call_id=call.id,
                                            name=call.name))
                idle = idle + 1 if errors + repeats == len(response.tool_calls) else 0
                if repeats or idle >= 2:
                    # No progress: a repeat, or calls failing twice in a row. The next
                    # iteration offers no tools, so the model must answer with what it has.
                    force_answer = True
                    ctx.progress(f"iteration {iteration}: "
                                 + ("the same call again" if repeats else "tool errors again")
                                 + " - no progress, asking for the final answer",
                                 iteration / settings.max_iterations)
            output: Any = text
            if task.output_schema is not None:
                output = _parse_json(text, task.output_schema)
            elif _action_payload(text) is not None:
                # The model imitated its earlier tool turns instead of answering in prose.
                ctx.progress("the answer was tool-call JSON: asking once more, without the "
                             "tool turns")
                retry = ChatRequest(
                    model=model_name,
                    messages=[*build_messages(task, settings, ctx.inputs),
                              Message("user", _plain_answer_prompt(workspace))],
                    tools=[], max_tokens=settings.max_tokens,
                    temperature=settings.temperature)
                again = (await complete(retry, (task.id, ctx.attempt, "plain"))).text
                output = (again if _action_payload(again) is None
                          else _prose_from_action(again, text, workspace))
            if task.output_file:
                try:
                    workspace.write_file(task.output_file, _as_text(output))
                except WorkspaceError as exc:
                    raise NonRetryableError(f"output_file: {exc}") from None
        except Exception as exc:
            # Money already spent on a failed attempt still counts in the run's totals.
            exc.partial_output = TaskOutput(None, usage.to_dict(), cost,  # type: ignore[attr-defined]
                                            list(workspace.written))
            raise
        return TaskOutput(output=output, usage={**usage.to_dict(), "calls": calls},
                          cost_usd=cost, files=list(workspace.written),
                          contents=dict(workspace.versions))


def _call_signature(name: str, arguments: Mapping[str, Any]) -> str:
    return name + ":" + json.dumps(arguments, sort_keys=True, default=str)


_JSON_STRING = r'"((?:[^"\\]|\\.)*)'
#: `{"thought": ...`, `"action": {`, `"tool": "...` - the local provider's action format
_ACTION_MARKERS = re.compile(r'\{\s*"thought"\s*:|"action"\s*:\s*\{|\{\s*"tool"\s*:\s*"')


def _action_payload(text: str) -> dict[str, str] | None:
    """The action JSON of a tool-calling turn found in a final answer, or None.

    Returns the strings worth keeping (`answer`, `thought`), read leniently: a model imitating
    its earlier turns often writes broken JSON (`{"path: "x"}`), so this looks for the keys
    instead of parsing.
    """
    if not _ACTION_MARKERS.search(text):
        return None
    found: dict[str, str] = {}
    for key in ("answer", "thought"):
        match = re.search(rf'"{key}"\s*:\s*' + _JSON_STRING + '"?', text, re.DOTALL)
        if match:
            try:
                found[key] = json.loads('"' + match.group(1) + '"')
            except json.JSONDecodeError:
                found[key] = match.group(1)
    return found


def _plain_answer_prompt(workspace: Workspace) -> str:
    files = ", ".join(sorted(_relative(workspace, f) for f in workspace.written))
    return ("You have finished the work" + (f" and wrote these files: {files}" if files else "")
            + ". Now answer in plain sentences, not JSON and without calling tools: what "
              "did you do, and what is the result?")


def _relative(workspace: Workspace, name: str) -> str:
    try:
        return Path(name).resolve().relative_to(workspace.root.resolve()).as_posix()
    except (ValueError, AttributeError):
        return str(name)


def _prose_from_action(text: str, first: str, workspace: Workspace) -> str:
    """Last resort after the re-ask also came back as action JSON: keep its words, never the
    JSON itself."""
    for candidate in (text, first):
        payload = _action_payload(candidate) or {}
        words = payload.get("answer") or payload.get("thought")
        if words and words.strip():
            return words.strip()
    files = ", ".join(sorted(_relative(workspace, f) for f in workspace.written))
    return f"Done; files written: {files}." if files else "Done (the model gave no summary)."


def _parse_json(text: str, schema: Mapping[str, Any]) -> Any:
    """The final answer as JSON. Malformed output is retryable: a new sample may be fine."""
    raw = text.strip()
    if raw.startswith("```"):
        raw = raw.strip("`")
        raw = raw[raw.find("\n") + 1:] if "\n" in raw else raw
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ProviderError(f"malformed output: the answer is not JSON ({exc.msg} at "
                            f"character {exc.pos}); output_schema asks for JSON",
                            retryable=True) from None
    if schema.get("type") == "object":
        if not isinstance(value, dict):
            raise ProviderError("malformed output: expected a JSON object", retryable=True)
        missing = [k for k in schema.get("required", []) if k not in value]
        if missing:
            raise ProviderError(f"malformed output: missing required keys {missing}",
                                retryable=True)
    return value
