"""The final response: one markdown text a person reads after the run.

Deterministic by design: the same run gives the same text, every number in it comes from the
run's result, and what failed or was skipped is said plainly (partial delivery is never
dressed up as success). An LLM may add one summary paragraph on top; it never replaces the
facts below it.
"""

from __future__ import annotations

from ..providers.base import ChatRequest, Message, Provider, ProviderError
from ..results import RunResult
from .aggregate import Aggregation
from .decompose import Decomposition

__all__ = ["synthesize", "llm_summary"]


def _first_line(text: str, limit: int = 160) -> str:
    for line in text.strip().splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def synthesize(decomposition: Decomposition, result: RunResult, aggregation: Aggregation,
               summary: str | None = None) -> str:
    """The final response in markdown."""
    tasks = decomposition.tasks
    n = len(tasks)
    ok = [t for t in tasks if result.tasks.get(t["id"]) and
          result.tasks[t["id"]].status == "succeeded"]
    not_ok = [t for t in tasks if t not in ok]
    if result.status == "succeeded":
        headline = f"Done: {decomposition.request}"
    elif ok:
        headline = (f"Partial delivery: {decomposition.request} — {len(ok)} of {n} tasks "
                    "delivered")
    else:
        headline = f"Not delivered: {decomposition.request} — no task succeeded"
    out = [f"# {headline}", ""]
    if summary:
        out += [summary.strip(), ""]

    out += ["## Plan", "",
            f"{decomposition.decision.capitalize()}: {decomposition.reason}.",
            f"Source: {decomposition.source}"
            + (f" (template {decomposition.template})" if decomposition.template else "")
            + (f", strategy {decomposition.strategy}" if decomposition.strategy
               and not decomposition.template else "")
            + f"; {n} task(s) in pools {', '.join(sorted({t['pool'] for t in tasks}))}.", ""]
    if decomposition.repairs:
        out.append(f"The planner's output needed {len(decomposition.repairs)} repair(s):")
        out += [f"- {r}" for r in decomposition.repairs[:20]]
        if len(decomposition.repairs) > 20:
            out.append(f"- … and {len(decomposition.repairs) - 20} more")
        out.append("")

    out += ["## What was built", ""]
    files = [p for p in aggregation.files if not p.startswith(".coordinator/")]
    if files:
        out += [f"- `{p}` (by {', '.join(aggregation.files[p])})" for p in files]
    else:
        out.append("No files were written.")
    if aggregation.workspace is not None:
        out += ["", f"Workspace: `{aggregation.workspace}`"]
    out.append("")

    out += ["## Results per agent", "",
            "| task | agent | pool | status | time | result |",
            "|---|---|---|---|---|---|"]
    for t in tasks:
        r = result.tasks.get(t["id"])
        status = r.status if r else "not run"
        secs = f"{r.busy_seconds:.1f}s" if r else "-"
        if r and r.status == "succeeded":
            note = _first_line(aggregation.outputs.get(t["id"], "")) or "(no text)"
        else:
            note = (r.error if r and r.error else status) or status
        note = note.replace("|", "\\|").replace("\n", " ")
        out.append(f"| {t['id']} | {t.get('agent', '-')} | {t['pool']} | {status} | {secs} "
                   f"| {note} |")
    out.append("")

    out += ["## Conflicts", ""]
    if aggregation.conflicts:
        for c in aggregation.conflicts:
            out.append(f"- **{c.kind}** ({c.subject}): {c.details}. Resolution: "
                       f"{c.resolution}. Why: {c.rationale}.")
    else:
        out.append("None detected (same files, unaddressed security findings, contradicting "
                   "choices were checked).")
    out.append("")

    if not_ok:
        out += ["## Not delivered", ""]
        for t in not_ok:
            r = result.tasks.get(t["id"])
            status = r.status if r else "not run"
            why = (r.error if r and r.error else "") or status
            out.append(f"- {t['id']} ({t.get('agent', '-')}): {status} — {why}")
        out.append("")
    if aggregation.security_requirements:
        out += ["## Still required (security)", ""]
        out += [f"- {r}" for r in aggregation.security_requirements]
        out.append("")

    # The run's totals: its tasks' calls and the planning call (`RunResult.prepaid`).
    usage_in = result.usage.get("input_tokens", 0)
    usage_out = result.usage.get("output_tokens", 0)
    cost_line = f"- cost ${result.cost_usd:.4f}; tokens in {usage_in}, out {usage_out}"
    paid = result.prepaid
    if paid is not None:
        cost_line += (f" (planning: ${paid.cost_usd:.4f}, tokens in "
                      f"{paid.usage.get('input_tokens', 0)}, out "
                      f"{paid.usage.get('output_tokens', 0)})")
    if result.budget_usd is not None:
        cost_line += f"; budget ${result.budget_usd:g}"
    out += ["## Time and cost", "",
            f"- wall time {result.makespan_seconds:.1f} s; the same work one after another "
            f"{result.serial_seconds:.1f} s; speedup {result.speedup:.2f}x "
            f"(up to {result.max_parallel} agents at once)",
            cost_line,
            f"- run `{result.run_id}`: {result.status}"
            + (f" ({result.reason})" if result.reason and result.status != "succeeded" else ""),
            ""]
    return "\n".join(out)


async def llm_summary(provider: Provider, decomposition: Decomposition,
                      aggregation: Aggregation, model: str = "",
                      max_tokens: int = 200) -> str | None:
    """One paragraph from the model summing up the outputs, or None if the call fails."""
    parts = [f"Request: {decomposition.request}"]
    for tid, text in aggregation.outputs.items():
        parts.append(f"[{tid}] {text[:600]}")
    try:
        response = await provider.complete(ChatRequest(
            model=model, max_tokens=max_tokens, temperature=0.2,
            messages=[Message("system", "Summarise in one short paragraph what the agents "
                              "delivered for the request. Plain text, no lists."),
                      Message("user", "\n\n".join(parts)[:6000])]))
    except ProviderError:
        return None
    text = response.text.strip()
    return text or None

