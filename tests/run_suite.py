"""Run the test suite as one pytest process per module, ``--jobs`` modules at a time.

Why not one pytest process: in a single long-lived process holding the compiled programs of
the whole suite, XLA's CPU compiler segfaulted (twice, at the same test); each module passes
on its own. Why not pytest-xdist: its workers are long-lived too (one process runs many
modules), which brings the segfault back, and it has no "fresh process per file" mode.

Why in parallel: the suite's time is mostly XLA compilation, which runs on one core (a
module's CPU time is ~0.9x its wall time), so two modules at a time use both cores of a
2-core machine (default: one module per core, at most 4). Modules are started longest first
(durations of the last run, kept in ``.pytest_cache/sgdlab-durations.json``; an unknown
module counts as long) so that the last one to finish is a short one. Each module's output
is printed in one piece when it ends.
Exit status: 0 when every module passed, else 1 (the failed modules are listed).

    python tests/run_suite.py [--jobs N] [module ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DURATIONS = ROOT / ".pytest_cache" / "sgdlab-durations.json"


def _load_durations() -> dict[str, float]:
    try:
        return {str(k): float(v) for k, v in json.loads(DURATIONS.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _run(module: str) -> tuple[str, int, float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--durations=3", "-p", "no:cacheprovider", module],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return module, proc.returncode, time.perf_counter() - t0, proc.stdout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("SGDLAB_TEST_JOBS", min(cores, 4))))
    ap.add_argument("modules", nargs="*")
    args = ap.parse_args(argv)
    modules = args.modules or sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py"))
    known = _load_durations()
    longest = max(known.values(), default=0.0) + 1.0
    order = sorted(modules, key=lambda m: -known.get(m, longest))
    jobs = max(1, min(args.jobs, len(order)))
    print(f"{len(order)} test modules, {jobs} at a time", flush=True)
    t0 = time.perf_counter()
    failed, took = [], dict(known)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_run, m) for m in order]
        for fut in as_completed(futures):
            module, rc, seconds, out = fut.result()
            took[module] = round(seconds, 1)
            status = "passed" if rc == 0 else f"FAILED (exit {rc})"
            print(f"== {module}: {status} in {seconds:.0f} s\n{out.rstrip()}\n", flush=True)
            if rc != 0:
                failed.append(module)
    DURATIONS.parent.mkdir(exist_ok=True)
    DURATIONS.write_text(json.dumps(dict(sorted(took.items())), indent=1))
    total = time.perf_counter() - t0
    slowest = sorted(((took[m], m) for m in order), reverse=True)[:5]
    print(f"suite: {len(order) - len(failed)}/{len(order)} modules passed in {total / 60:.1f} min "
          f"({jobs} at a time); slowest: " + ", ".join(f"{Path(m).stem} {s:.0f} s" for s, m in slowest))
    if failed:
        print("failed modules: " + " ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
