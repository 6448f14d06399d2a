"""Engine throughput of this source tree against another one, alternating, in one run.

For a before/after table of a change (e.g. ``git worktree add /tmp/old REV``): each round
runs, in fresh processes, the chain (d = 10^3, p = 1, batch 1, 1024 seeds, 2000 steps) and
the full simulation (d = 10^3, float32, 32 seeds, 1000 steps) of the h3 single-index
benchmark, keeping the best of three calls after a first (compiling) one, first with
``--other`` and then with this tree; medians over the rounds and their ratio are printed and saved.

    python benchmarks/revisions.py --other /tmp/old/src [--rounds 3] [--single-thread]

``--single-thread`` pins every child to one core (``taskset -c 1``) with XLA's intra-op
parallelism off and reports rates per second of the process's CPU time: on a shared machine
this is far less sensitive to other load than wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHILD = r"""
import os, time
from sgdlab import Chain, Full, Problem, Student, Training, run
clock = time.process_time if os.environ.get("SGDLAB_BENCH_CPU_TIME") else time.perf_counter
pb, st = Problem(d=1000, link="h3"), Student(activation="h3")
out = []
for eng, seeds, steps in ((Chain(), 1024, 2000), (Full(), 32, 1000)):
    tr = Training(lr=1e-4, steps=steps, record_every=steps, spherical=True, init=0.3)
    run(pb, st, tr, engine=eng, seeds=seeds)
    best = float("inf")
    for _ in range(3):
        t = clock()
        run(pb, st, tr, engine=eng, seeds=seeds)
        best = min(best, clock() - t)
    out.append(seeds * steps / best)
print(*out)
"""
SINGLE_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def rates(src: str, single: bool = False) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": src, "SGDLAB_COMPILATION_CACHE": "off"}
    cmd = [sys.executable, "-c", CHILD]
    if single:
        env.update(XLA_FLAGS=SINGLE_FLAGS, SGDLAB_BENCH_CPU_TIME="1")
        cmd = ["taskset", "-c", "1", *cmd]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    chain, full = (float(x) for x in out.stdout.split())
    return chain, full


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--other", required=True, help="the other tree's src folder")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--single-thread", action="store_true", help="one pinned core, rates per CPU second")
    args = ap.parse_args()
    this = str(HERE.parent / "src")
    res: dict[str, list] = {"other": [], "this": []}
    for _ in range(args.rounds):
        res["other"].append(rates(args.other, args.single_thread))
        res["this"].append(rates(this, args.single_thread))
    med = {k: [statistics.median(r[i] for r in v) for i in range(2)] for k, v in res.items()}
    report = {"seed_steps_per_s": med, "this_over_other": [med["this"][i] / med["other"][i] for i in range(2)],
              "rounds": res, "other": args.other, "single_thread": args.single_thread}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "revisions-cpu.json").write_text(json.dumps(report, indent=2) + "\n")
    print("| engine | other (seed-steps/s) | this | this / other |\n|---|---|---|---|")
    for i, name in enumerate(("chain d=1e3", "full d=1e3")):
        print(f"| {name} | {med['other'][i]:.3g} | {med['this'][i]:.3g} | {report['this_over_other'][i]:.2f} |")


if __name__ == "__main__":
    main()
