"""Where the test suite's compilation time goes, from a profiled suite run.

Run the suite with ``SGDLAB_TEST_COMPILE_PROFILE=FOLDER`` (``tests/conftest.py`` then records,
per test, the seconds JAX spent tracing, lowering and compiling each function, from
jax.monitoring's events, into FOLDER/<module>.json), then summarise:

    SGDLAB_TEST_COMPILE_PROFILE=/tmp/prof python tests/run_suite.py
    python benchmarks/compile_profile.py /tmp/prof [--top 20]

Prints the total, the functions with the most compile + trace + lower seconds (``jit(_advance)``
and ``jit(_start)`` are the chain's two programs, ``diffeqsolve`` the ODE) and the tests with
the most. Backend compile seconds include loads from the persistent cache (a load is short).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args()
    by_fun: dict[str, list[float]] = {}  # name -> [compiles, compile s, trace + lower s]
    by_test: dict[str, float] = {}
    for f in sorted(Path(args.folder).glob("*.json")):
        for test, events in json.loads(f.read_text()).items():
            for key, (n, secs) in events.items():
                kind, fun = key.split(":", 1)
                name = fun[4:-1] if fun.startswith("jit(") else fun  # trace events name the bare function
                row = by_fun.setdefault(name, [0, 0.0, 0.0])
                if kind == "compile":
                    row[0] += n
                    row[1] += secs
                else:
                    row[2] += secs
                by_test[test] = by_test.get(test, 0.0) + secs
    total = sum(r[1] + r[2] for r in by_fun.values())
    print(f"traced + lowered + compiled: {total:.0f} s over {len(by_test)} tests")
    print(f"{'s':>8} {'compiles':>8} {'compile s':>9} {'trace+lower s':>13}  function")
    for name, (n, c, o) in sorted(by_fun.items(), key=lambda kv: -(kv[1][1] + kv[1][2]))[: args.top]:
        print(f"{c + o:8.1f} {n:8d} {c:9.1f} {o:13.1f}  {name}")
    print(f"\n{'s':>8}  test")
    for test, secs in sorted(by_test.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{secs:8.1f}  {test}")


if __name__ == "__main__":
    main()
