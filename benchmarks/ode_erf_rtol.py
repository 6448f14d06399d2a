"""The erf committee's ODE at several solver tolerances, against a tight reference (issue "The
ODE for wide two-layer networks": speed against committee_learning at equal accuracy).

Same problem as ``benchmarks/ode_width.py`` (erf, r = 2, output scale sum, d = 1000, lr = 1/d,
10^5 steps, lr^2 terms on), width from the command line. For rtol 1e-10 (reference), 1e-8 (the
default), 1e-6 and 1e-5: the second call's wall time, the solver's steps and the largest relative
deviation of Q and M over the run from the reference. One JSON line per tolerance.

    python benchmarks/ode_erf_rtol.py P >> benchmarks/results/ode-erf-rtol-cpu.jsonl
"""

from __future__ import annotations

import json
import sys
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from sgdlab import ODE, Problem, Student, Training, run  # noqa: E402
from sgdlab.init import Gram  # noqa: E402

RTOLS = (1e-10, 1e-8, 1e-6, 1e-5)


def main() -> None:
    p, d, r = int(sys.argv[1]), 1000, 2
    rng = np.random.default_rng(0)
    M0 = np.abs(rng.normal(size=(p, r))) / np.sqrt(d) * 2.0
    pb = Problem(d=d, link="erf", directions=r)
    st = Student(width=p, activation="erf", output_scale="sum")
    tr = Training(lr=1.0 / d, steps=100_000, record_every=1000, init=Gram(Q0=np.eye(p), M0=M0))
    out = {}
    for rt in RTOLS:
        eng = ODE(rtol=rt, atol=rt * 1e-2)
        for _ in range(2):  # the second call: the solve without compilation
            t0 = time.perf_counter()
            res = run(pb, st, tr, engine=eng)
            dt = time.perf_counter() - t0
        out[rt] = (dt, res.Q[0], res.M[0], res.info["solver"])
    _, Qr, Mr, _ = out[RTOLS[0]]
    for rt, (dt, Q, M, sv) in out.items():
        dev = max(np.max(np.abs(Q - Qr)) / np.max(np.abs(Qr)), np.max(np.abs(M - Mr)) / np.max(np.abs(Mr)))
        print(json.dumps({"p": p, "rtol": rt, "second_s": round(dt, 3), "max_rel_dev_vs_rtol1e-10": float(dev),
                          "solver": sv}), flush=True)


if __name__ == "__main__":
    main()
