"""Compute the expensive runs of a reproduction into a results store, e.g. on an accelerator.

``sgdlab reproduce NAME`` runs every run it needs that is not yet in its store; the runs are
keyed by their configuration alone, so they can be computed anywhere. This script runs the
subset whose cost (seed-samples at the horizon) is at least ``--min-cost``, cheapest first,
in this process (one accelerator), starts no new run after ``--budget`` seconds, and after
each run packs the store's run folders into ``--tar`` (copy it back, unpack it into the
store's ``runs/`` folder: the store adopts complete run folders on opening).

    python benchmarks/reproduce_runs.py info-exponent --min-cost 1e10 --budget 300 \\
        --store /tmp/store --tar $OUT/store.tar
    tar -xf store.tar -C results/store && sgdlab reproduce info-exponent
"""

from __future__ import annotations

import argparse
import importlib
import tarfile
import time
from pathlib import Path

import jax


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", help="info-exponent or smoothing")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--min-cost", type=float, default=0.0, help="least seed-samples at the horizon")
    ap.add_argument("--max-cost", type=float, default=float("inf"))
    ap.add_argument("--budget", type=float, default=float("inf"), help="seconds after which no run starts")
    ap.add_argument("--store", type=Path, default=Path("results/store"))
    ap.add_argument("--tar", type=Path, default=None, help="pack the run folders here after each run")
    args = ap.parse_args(argv)

    from sgdlab.reproduce._common import run_points

    mod = importlib.import_module("sgdlab.reproduce." + args.name.replace("-", "_"))
    _, points = mod.plan(quick=args.quick)
    todo = sorted((p for p in points if args.min_cost <= mod.cost(p) <= args.max_cost), key=mod.cost)
    print(f"{len(todo)} of {len(points)} runs on {jax.devices()[0]}; budget {args.budget:g} s", flush=True)
    t0 = time.perf_counter()
    for p in todo:
        if time.perf_counter() - t0 > args.budget:
            print(f"budget spent: skipping {p.tags}", flush=True)
            continue
        t1 = time.perf_counter()
        (res,), (row,) = run_points([p], store=args.store, workers=1)
        e = res.escape_step
        print(f"{dict(p.tags)} cost {mod.cost(p):.3g}: {time.perf_counter() - t1:.1f} s, "
              f"escaped {(e >= 0).mean():.2f}, last step {res.steps[-1]}", flush=True)
        if args.tar is not None:
            tmp = args.tar.with_suffix(".part")
            with tarfile.open(tmp, "w") as tf:
                tf.add(args.store / "runs", arcname="runs")
            tmp.replace(args.tar)
    print(f"done in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
