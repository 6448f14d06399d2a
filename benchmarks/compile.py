"""Compilation benchmark: what a sweep pays for compilation, and the persistent cache.

Each measurement runs in a fresh Python process (so nothing is cached in memory):

- ``sweep_d``: the chain over d = 10^2, 10^3, 10^4, 10^5 (h3 single index, spherical SGD,
  p = 1, batch 1, 256 seeds, 2000 steps, warm start m0 = 0.3, lr = 0.1 / d), persistent
  cache off;
- ``sweep_lr``: the same four runs at d = 10^3 with four step sizes, cache off;
- ``sweep_mixed``: four runs at d = 10^3 that differ in label noise, m0, escape threshold and
  horizon, cache off;
- ``first_call_cold`` / ``first_call_warm``: one run of a new structure with an empty
  persistent cache, then again in a new process once the cache holds it.

Targets (issue "Compile once per structure"): sweep_d <= 1.3 x sweep_lr; a warm first call
<= 3 s. Ratios come from one run of this script.

    python benchmarks/compile.py            # prints a table, writes benchmarks/results/compile-cpu.json
    python benchmarks/compile.py --src OTHER/src   # the same for another source tree (before/after)
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

CHILD = r"""
import sys, time
t0 = time.perf_counter()
from sgdlab import Chain, Problem, Student, Training, run
try:  # the persistent compilation cache, as the CLI, the sweep workers and the tests use it
    from sgdlab._cache import enable_compilation_cache
    enable_compilation_cache()
except ImportError:  # an older source tree without it
    pass
kind = sys.argv[1]
st = Student(activation="h3")
base = dict(steps=2000, record_every=200, spherical=True, init=0.3)
if kind == "sweep_d":
    jobs = [(Problem(d=d, link="h3"), Training(lr=0.1 / d, **base)) for d in (10**2, 10**3, 10**4, 10**5)]
elif kind == "sweep_lr":
    jobs = [(Problem(d=1000, link="h3"), Training(lr=f * 1e-4, **base)) for f in (0.5, 1.0, 2.0, 4.0)]
elif kind == "sweep_mixed":
    jobs = [(Problem(d=1000, link="h3", noise=0.1), Training(lr=1e-4, **base)),
            (Problem(d=1000, link="h3", noise=0.3), Training(lr=1e-4, **base)),
            (Problem(d=1000, link="h3", noise=0.1), Training(lr=1e-4, **{**base, "init": 0.2})),
            (Problem(d=1000, link="h3", noise=0.1), Training(lr=1e-4, escape_threshold=0.3, **{**base, "steps": 2100}))]
else:
    jobs = [(Problem(d=1000, link="h2", noise=0.2), Training(lr=1e-4, batch=2, **base))]
t1 = time.perf_counter()
for pb, tr in jobs:
    run(pb, st, tr, engine=Chain(), seeds=256)
print(t1 - t0, time.perf_counter() - t1)
"""


SRC = str(Path(__file__).resolve().parents[1] / "src")


def child(kind: str, cache: str) -> tuple[float, float]:
    src = SRC
    env = {**os.environ, "SGDLAB_COMPILATION_CACHE": cache, "PYTHONPATH": src}
    out = subprocess.run([sys.executable, "-c", CHILD, kind], env=env, capture_output=True, text=True, check=True)
    imp, work = (float(x) for x in out.stdout.split())
    return imp, work


def main() -> None:
    global SRC
    if "--src" in sys.argv:  # another source tree (e.g. an older revision) for a before/after table
        SRC = sys.argv[sys.argv.index("--src") + 1]
    rows = {}
    for kind in ("sweep_d", "sweep_lr", "sweep_mixed"):
        rows[kind] = child(kind, "off")[1]
    with tempfile.TemporaryDirectory() as tmp:
        rows["first_call_cold"] = child("first", tmp)[1]
        rows["first_call_warm"] = child("first", tmp)[1]
    ratio = rows["sweep_d"] / rows["sweep_lr"]
    report = {
        "machine": f"{platform.machine()} ({os.cpu_count()} cores), {platform.system()}",
        "seconds": rows,
        "sweep_d_over_sweep_lr": ratio,
        "targets": {
            "sweep_d <= 1.3 x sweep_lr": ratio <= 1.3,
            "warm first call <= 3 s": rows["first_call_warm"] <= 3.0,
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    report["src"] = SRC
    RESULTS.mkdir(exist_ok=True)
    name = "compile-cpu.json" if "--src" not in sys.argv else "compile-cpu-other-src.json"
    (RESULTS / name).write_text(json.dumps(report, indent=2) + "\n")
    print("| measurement | wall time (s) |\n|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {v:.2f} |")
    print(f"\nsweep over d / sweep over lr: {ratio:.2f}")
    for k, v in report["targets"].items():
        print(f"- {'PASS' if v else 'FAIL'} {k}")


if __name__ == "__main__":
    main()
