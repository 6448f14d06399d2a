"""Engine throughput of this source tree against another one, alternating, in one run.

For a before/after table of a change (e.g. ``git worktree add /tmp/old REV``): each round
runs, in fresh processes, the chain (d = 10^3, p = 1, batch 1, 1024 seeds, 2000 steps) and
the full simulation (d = 10^3, float32, 32 seeds, 1000 steps) of the h3 single-index
benchmark, keeping the best of three calls after a first (compiling) one, first with
``--other`` and then with this tree; medians over the rounds and their ratio are printed and saved.

    python benchmarks/revisions.py --other /tmp/old/src [--rounds 3]
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
import time
from sgdlab import Chain, Full, Problem, Student, Training, run
pb, st = Problem(d=1000, link="h3"), Student(activation="h3")
out = []
for eng, seeds, steps in ((Chain(), 1024, 2000), (Full(), 32, 1000)):
    tr = Training(lr=1e-4, steps=steps, record_every=steps, spherical=True, init=0.3)
    run(pb, st, tr, engine=eng, seeds=seeds)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        run(pb, st, tr, engine=eng, seeds=seeds)
        best = min(best, time.perf_counter() - t)
    out.append(seeds * steps / best)
print(*out)
"""


def rates(src: str) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": src, "SGDLAB_COMPILATION_CACHE": "off"}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    chain, full = (float(x) for x in out.stdout.split())
    return chain, full


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--other", required=True, help="the other tree's src folder")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    this = str(HERE.parent / "src")
    res: dict[str, list] = {"other": [], "this": []}
    for _ in range(args.rounds):
        res["other"].append(rates(args.other))
        res["this"].append(rates(this))
    med = {k: [statistics.median(r[i] for r in v) for i in range(2)] for k, v in res.items()}
    report = {"seed_steps_per_s": med, "this_over_other": [med["this"][i] / med["other"][i] for i in range(2)],
              "rounds": res, "other": args.other}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "revisions-cpu.json").write_text(json.dumps(report, indent=2) + "\n")
    print("| engine | other (seed-steps/s) | this | this / other |\n|---|---|---|---|")
    for i, name in enumerate(("chain d=1e3", "full d=1e3")):
        print(f"| {name} | {med['other'][i]:.3g} | {med['this'][i]:.3g} | {report['this_over_other'][i]:.2f} |")


if __name__ == "__main__":
    main()
