"""Compilation cost of the chain's two programs (``_start``, ``_advance``) for this source tree
against another one, alternating, in one run.

Each round runs, in fresh processes with the persistent compilation cache off, the first
runs of four structures of the quick reproductions (two single-index points of
info-exponent, two sequence points of ssi) with this tree and with ``--other``, at XLA's
default backend optimisation level and at level 0 (the level the test suite uses for its
compile-bound modules). It reports XLA's backend compile seconds of the two chain programs
(jax.monitoring's ``backend_compile_duration`` events) and the process's CPU seconds; medians
over the rounds and the ratio this/other are printed and saved to
``benchmarks/results/compile-step-cpu.json``.

    python benchmarks/compile_step.py --other /tmp/old/src [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHILD = r"""
import json, sys, time
import jax
jax.config.update("jax_enable_x64", True)
from jax import monitoring
acc = {}
def listen(ev, dur, **kw):
    if ev.endswith("backend_compile_duration"):
        name = kw.get("fun_name", "?")
        acc[name] = acc.get(name, 0.0) + dur
monitoring.register_event_duration_secs_listener(listen)
from sgdlab.sweep import compute
c0 = time.process_time()
for cfg in json.loads(sys.argv[1]):
    out = compute(cfg)
    assert "error" not in out, out["error"]
print(json.dumps({"cpu_s": time.process_time() - c0, "start_s": acc.get("jit(_start)", 0.0),
                  "advance_s": acc.get("jit(_advance)", 0.0)}))
"""


def _configs() -> list[dict]:
    from sgdlab.reproduce import info_exponent, ssi

    _, ie = info_exponent.plan(quick=True)
    _, sq = ssi.plan(quick=True)
    return [p.config for p in ie[:2]] + [p.config for p in sq[:2]]


def _child(src: str, cfgs: list[dict], level: str) -> dict:
    env = {**os.environ, "PYTHONPATH": src, "SGDLAB_COMPILATION_CACHE": "off"}
    env.pop("XLA_FLAGS", None)
    if level == "0":
        env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfgs)], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--other", required=True, help="the other tree's src folder")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    this = str(HERE.parent / "src")
    cfgs = _configs()
    runs: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for level in ("default", "0"):
            for name, src in (("other", args.other), ("this", this)):
                runs.setdefault(f"{name}/{level}", []).append(_child(src, cfgs, level))
    rows = []
    print("| level | tree | _start compile s | _advance compile s | process CPU s |")
    print("|---|---|---|---|---|")
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("start_s", "advance_s", "cpu_s")}
           for k, v in runs.items()}
    for level in ("default", "0"):
        for name in ("other", "this"):
            m = med[f"{name}/{level}"]
            print(f"| {level} | {name} | {m['start_s']:.2f} | {m['advance_s']:.2f} | {m['cpu_s']:.1f} |")
        a, b = med[f"this/{level}"], med[f"other/{level}"]
        rows.append({"level": level, **{f"ratio_{f}": a[f] / b[f] for f in a}})
        print(f"| {level} | this/other | {a['start_s'] / b['start_s']:.2f} | {a['advance_s'] / b['advance_s']:.2f}"
              f" | {a['cpu_s'] / b['cpu_s']:.2f} |")
    out = HERE / "results" / "compile-step-cpu.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                               "other": args.other, "structures": len(cfgs), "runs": runs, "medians": med,
                               "ratios": rows}, indent=1))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
