"""The escape-time law from the SDE engine against the chain, at several d.

For the h3 single-index problem (student h3, correlation loss, spherical SGD, random start,
delta = lr d^{3/2} = 1, escape at m = 0.5): the SDE engine's wall time for ``--paths`` paths
(second call, so without compilation; the step-size check included) at each d, its median
escape time in samples, and the chain's cost of the same law: its measured throughput at that
d (1024 seeds, ``--chain-steps`` steps, second call) times the seed-steps needed for the
median of ``--paths`` seeds (each seed run until the SDE's median, a lower bound: the chain
cannot stop a seed before it escapes). The chain's cost is an estimate from its throughput
(running it would take hours at d = 10^4); the SDE's is measured.

    python benchmarks/sde.py [--paths 10000] [--ds 1000,10000,1000000,1000000000]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np

from sgdlab import Chain, Problem, Student, Training, run
from sgdlab.engines import SDE

HERE = Path(__file__).resolve().parent


def _setting(d: int, steps: int):
    pb, st = Problem(d=d, link="h3"), Student(activation="h3")
    tr = Training(lr=d**-1.5, steps=steps, record_every=steps, spherical=True, init="random", loss="correlation")
    return pb, st, tr


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--paths", type=int, default=10_000)
    ap.add_argument("--ds", default="1000,10000,1000000,1000000000")
    ap.add_argument("--chain-steps", type=int, default=20_000)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "sde-cpu.json")
    args = ap.parse_args(argv)
    rows = []
    for d in (int(x) for x in args.ds.split(",")):
        pb, st, tr = _setting(d, int(12 * float(d) ** 2))
        run(pb, st, tr, engine=SDE(), seeds=args.paths, seed=1)  # compile
        t0 = time.perf_counter()
        r = run(pb, st, tr, engine=SDE(), seeds=args.paths, seed=0)
        wall = time.perf_counter() - t0
        steps = np.where(np.isnan(r.escape_step), np.inf, r.escape_step)
        median = float(np.quantile(steps, 0.5, method="inverted_cdf"))
        row = {"d": d, "paths": args.paths, "sde_wall_s": wall, "median_escape_samples": median,
               "escaped": float(np.mean(np.isfinite(steps))), "dt_check": r.info["sde"]["dt_check"]}
        if d <= 10**5:
            cpb, cst, ctr = _setting(d, args.chain_steps)
            run(cpb, cst, ctr, engine=Chain(), seeds=1024)
            t0 = time.perf_counter()
            run(cpb, cst, ctr, engine=Chain(), seeds=1024)
            rate = 1024 * args.chain_steps / (time.perf_counter() - t0)
            row["chain_seed_steps_per_s"] = rate
            row["chain_estimated_s"] = args.paths * median / rate
            row["chain_over_sde"] = row["chain_estimated_s"] / wall
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "dt_check"}), flush=True)
    meta = {"machine": platform.processor() or platform.machine(), "cores": jax.local_device_count(),
            "device": jax.devices()[0].platform, "jax": jax.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print("| d | SDE wall (s), paths | median escape (samples) | chain estimate (s) | chain / SDE |")
    print("|---|---|---|---|---|")
    for r in rows:
        ch = f"{r['chain_estimated_s']:.3g} | {r['chain_over_sde']:.3g}" if "chain_estimated_s" in r else "- | -"
        print(f"| {r['d']:.0e} | {r['sde_wall_s']:.1f}, {r['paths']} | {r['median_escape_samples']:.3g} | {ch} |")


if __name__ == "__main__":
    main()
