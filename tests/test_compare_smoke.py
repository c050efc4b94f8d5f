"""benchmarks/compare.py must keep running: the asyncio and parallel-agents rows, tiny sizes.

No timing is asserted (the machine is shared); only that every row is measured, judged
against parallel-agents and written as markdown.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_compare_quick_rows_for_asyncio_and_parallel_agents(tmp_path: Path) -> None:
    out = tmp_path / "table.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--quick",
         "--contenders", "asyncio,parallel-agents", "--workloads", "overhead,makespan",
         "--n", "50", "--dags", "2", "--scale", "0.002", "--markdown", str(out)],
        check=False, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    md = out.read_text(encoding="utf-8")
    by_hand = "asyncio tasks by hand"
    for workload, asyncio_label in (
            ("50-task fan-out", "asyncio (floor)"), ("50-task chain", "asyncio (floor)"),
            ("restaurant plan", by_hand), ("2 random DAGs", by_hand), ("fast branch", by_hand)):
        ours = f"| {workload} | parallel-agents |"
        floor = f"| {workload} | {asyncio_label} |"
        assert ours in md and floor in md, (workload, md)
        floor_line = next(line for line in md.splitlines() if line.startswith(floor))
        # Measured (a number, not n/a) and judged against us (a ratio and a verdict).
        cells = [c.strip() for c in floor_line.strip("|").split("|")]
        assert cells[3] != "n/a" and float(cells[4]) > 0, floor_line
        assert cells[5].startswith(("we win", "we lose", "tie")), floor_line
    assert "versions: python" in md and "parallel-agents 0.1.0" in md
    assert "x ours" in proc.stdout


def test_compare_rejects_an_unknown_contender() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--contenders", "celery"],
        check=False, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    assert "unknown contender(s) celery" in proc.stderr
    assert "Traceback" not in proc.stderr
