"""Schedule quality in virtual time: makespan / lower bound per strategy.

Seeded random DAGs with pools are run through `parallel_agents.simulate` (the same scheduler
the executor uses, with durations = `estimated_seconds`). Each makespan is divided by the
plan's lower bound, `parallel_agents.metrics.lower_bound`: max(critical path, per pool
work / slots). The same bound (the plan's, not a strategy's) is used for every strategy, so
`sequential` shows what running one task at a time costs. 1.00 is optimal.

    python benchmarks/makespan.py               # 300 DAGs
    python benchmarks/makespan.py --dags 50     # quicker

Target (issue #2): mean ratio under 1.10 for `dependency`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys

import parallel_agents as pa
from parallel_agents.metrics import lower_bound

STRATEGIES = ("dependency", "waves", "sequential")
TARGET_MEAN_RATIO = 1.10


def _noop() -> None:
    return None


def random_plan(rng: random.Random) -> pa.Plan:
    """A DAG like an agent plan: 10-60 tasks, up to 3 dependencies each, 3 pools."""
    pools = {
        "codegen": pa.Pool(max_concurrent=rng.randint(2, 4)),
        "review": pa.Pool(max_concurrent=rng.randint(1, 3)),
        "research": pa.Pool(max_concurrent=rng.randint(2, 6)),
    }
    n = rng.randint(10, 60)
    tasks = []
    for i in range(n):
        deps: set[str] = set()
        if i:
            for _ in range(rng.choice([0, 1, 1, 2, 3])):
                # Mostly recent tasks: chains of varied length, as in real plans.
                deps.add(f"t{rng.randrange(max(0, i - 8), i)}")
        tasks.append(pa.Task(
            id=f"t{i}", run=_noop, depends_on=sorted(deps), pool=rng.choice(list(pools)),
            priority=rng.choice(["low", "medium", "medium", "high", "critical"]),
            estimated_seconds=round(rng.lognormvariate(1.5, 0.8), 1) + 0.1,
        ))
    return pa.Plan(name=f"random-{n}", tasks=tasks, pools=pools)


def restaurant_plan() -> pa.Plan:
    """The seeds' example: frontend, backend and schema in parallel; the audit needs backend."""
    return pa.Plan(
        name="restaurant-website",
        pools={"codegen": pa.Pool(max_concurrent=2), "database": pa.Pool(max_concurrent=1),
               "security": pa.Pool(max_concurrent=1)},
        tasks=[
            pa.Task(id="frontend", run=_noop, pool="codegen", priority="high",
                    estimated_seconds=45),
            pa.Task(id="backend", run=_noop, pool="codegen", priority="high",
                    estimated_seconds=90),
            pa.Task(id="schema", run=_noop, pool="database", priority="high",
                    estimated_seconds=45),
            pa.Task(id="security_audit", run=_noop, pool="security", priority="medium",
                    depends_on=["backend"], estimated_seconds=60),
        ],
    )


def ratios(plan: pa.Plan) -> dict[str, float]:
    weight = {t.id: t.estimated_seconds for t in plan.tasks}
    bound = lower_bound(plan, weight, None)
    return {s: pa.simulate(plan, strategy=s).makespan / bound for s in STRATEGIES}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dags", type=int, default=300)
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    results: dict[str, list[float]] = {s: [] for s in STRATEGIES}
    dep_better = waves_better = 0
    for _ in range(args.dags):
        r = ratios(random_plan(rng))
        for s in STRATEGIES:
            results[s].append(r[s])
        dep_better += r["dependency"] < r["waves"] - 1e-9
        waves_better += r["waves"] < r["dependency"] - 1e-9

    print(f"{args.dags} seeded random DAGs (seed {args.seed}), virtual time, "
          "makespan / lower bound (1.00 = optimal)")
    print(f"{'strategy':>12} {'mean':>7} {'median':>7} {'max':>7}")
    for s in STRATEGIES:
        xs = results[s]
        print(f"{s:>12} {statistics.fmean(xs):>7.3f} {statistics.median(xs):>7.3f} "
              f"{max(xs):>7.3f}")
    mean_dep = statistics.fmean(results["dependency"])
    mean_waves = statistics.fmean(results["waves"])
    print(f"dependency vs waves: {mean_waves / mean_dep:.2f}x shorter on average; dependency "
          f"shorter on {dep_better}, waves shorter on {waves_better}, tied on "
          f"{args.dags - dep_better - waves_better}")

    plan = restaurant_plan()
    weight = {t.id: t.estimated_seconds for t in plan.tasks}
    bound = lower_bound(plan, weight, None)
    print("\nrestaurant website (seeds): frontend 45s, backend 90s, schema 45s in parallel; "
          f"security audit 60s after backend; lower bound {bound:g}s")
    for s in STRATEGIES:
        sim = pa.simulate(plan, strategy=s)
        starts = ", ".join(f"{a.task_id}@{a.start:g}s" for a in
                           sorted(sim.attempts, key=lambda a: (a.start, a.task_id)))
        print(f"{s:>12}: makespan {sim.makespan:>5g}s  ratio {sim.makespan / bound:.2f}  "
              f"starts {starts}")

    ok = mean_dep < TARGET_MEAN_RATIO
    print(f"\ntarget: dependency mean ratio < {TARGET_MEAN_RATIO:.2f}: "
          + ("OK" if ok else "MISSED") + f" ({mean_dep:.3f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
