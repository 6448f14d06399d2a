"""Engine throughput benchmark: ``full`` vs ``chain`` vs raw Gaussian sampling, and ``ODE`` horizons.

What is measured (single-index h3 target, h3 student, spherical SGD, p = 1, batch 1,
lr = 0.1 / d, init m0 = 0.3, one record at the end):

- seed-steps per second of ``Full()`` (float32) and ``Chain()`` (float64) for
  d in {10^2, 10^3, 10^4, 10^5};
- the raw rate of the chain's random variates drawn with jax's default samplers (four keys
  split per step, two normal draws, ``jax.random.chisquare``), the reference for ``chain``
  (chain/raw);
- ``Chain(dtype="float32")`` against the float64 chain at d = 10^3: throughput and accuracy
  in law;
- the raw Gaussian sampling rate of the machine, the reference for ``full``: a jitted,
  vmapped ``jax.random.normal(key, (1, d), float32)`` per seed-step inside a
  ``lax.fori_loop`` with the same seeds x steps shape as the ``full`` run;
- ``ODE()`` wall time for a long single-index escape at d = 10^6 (lr = 10^-4 / d, m0 = 0.01,
  escape at ~3.6e11 steps) over 10^9 and over 10^12 steps: adaptive integration, so the
  horizon costs nothing.

Every timing is the *second* of two identical calls (built engines are cached per
(engine, model), so the first call pays the compilation); results come back as numpy
arrays, so execution is complete when ``run`` returns. Ratios are taken within one run of
this script, which matters on a shared machine.

Usage::

    python benchmarks/engines.py                # full benchmark, JSON + markdown table
    python benchmarks/engines.py --quick        # smoke version (compilation dominates)
    python benchmarks/engines.py --update-md    # also rewrite this platform's BENCHMARKS.md section
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
from jax import lax

from sgdlab import ODE, Chain, Full, Problem, Student, Training, run

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
MD = ROOT / "BENCHMARKS.md"

DIMS = (10**2, 10**3, 10**4, 10**5)

# (seeds, steps) per d, sized for ~1-4 s per timed call on a 2-core CPU.
CHAIN_SHAPE = {d: (1024, 2000) for d in DIMS}
FULL_SHAPE = {10**2: (64, 1000), 10**3: (32, 1000), 10**4: (8, 1000), 10**5: (8, 128)}

# An accelerator runs many seeds per step for the price of one: sized for ~0.5-2 s per call.
GPU_CHAIN_SHAPE = {d: (16384, 4000) for d in DIMS}
GPU_FULL_SHAPE = {10**2: (4096, 2000), 10**3: (1024, 2000), 10**4: (256, 1000), 10**5: (64, 500)}

# The regime of the reproductions: many samples per step (batch), samples per second.
BATCH_SHAPE = {"cpu": (128, 64, 200), "gpu": (128, 4096, 2000)}  # seeds, batch, steps

QUICK_DIMS = (10**2, 10**4)
QUICK_CHAIN_SHAPE = {d: (64, 100) for d in QUICK_DIMS}
QUICK_FULL_SHAPE = {10**2: (8, 100), 10**4: (4, 50)}

ODE_D = 10**6
# lr * d must be small against m0: the lr^2 d noise term of the spherical drift beats the
# 3 lr m^2 signal when lr d >~ m0 / 3 (at lr = 0.05 / d, m0 = 0.01 the overlap decays to
# 1e-11 instead of escaping). lr = 1e-4 / d escapes from m0 = 0.01 at ~3.6e11 steps.
ODE_LR_D = 1e-4
ODE_M0 = 0.01
ODE_HORIZONS = (10**9, 10**12)
QUICK_ODE_HORIZONS = (10**9,)

# Targets
CHAIN_FLAT_MAX = 1.5  # chain max/min rate over d
CHAIN_OVER_FULL_MIN = 100.0  # at d = 10^4
FULL_OVER_RAW_MIN = 0.5  # at each d
CHAIN_OVER_RAW_MIN = 1.5  # at d = 10^3: the chain step against its variates drawn by jax's samplers


def _timed(fn, repeat: int) -> tuple[float, float, object]:
    """(first-call seconds, best later-call seconds, last result)."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return first, best, out


def _sgd_args(d: int, steps: int):
    return (
        Problem(d=d, link="h3"),
        Student(activation="h3"),
        Training(lr=0.1 / d, steps=steps, spherical=True, record_every=steps, init=0.3),
    )


def _engine_only(engine, problem, student, training, seeds: int, repeat: int) -> float | None:
    """Seconds of the compiled step loop alone (no ``run`` bookkeeping such as the risk table).

    Uses sgdlab internals (the cached built engine and the driver); None if they moved.
    """
    try:
        from sgdlab.api import _built
        from sgdlab.engines._driver import drive, seed_keys
        from sgdlab.model import Model
    except ImportError:
        return None
    model = Model(problem, student, training)
    built = _built(engine, model)
    kw = {"steps": training.steps, "every": training.record_every, "threshold": training.escape_threshold,
          "hyper": engine.hyper(model)}
    _, best, _ = _timed(lambda: drive(built, seed_keys(0, seeds), **kw), repeat)
    return best


def bench_engine(engine, d: int, seeds: int, steps: int, repeat: int) -> dict:
    problem, student, training = _sgd_args(d, steps)
    first, best, _ = _timed(lambda: run(problem, student, training, engine=engine, seeds=seeds, seed=0), repeat)
    eng = _engine_only(engine, problem, student, training, seeds, repeat)
    return {
        "d": d,
        "seeds": seeds,
        "steps": steps,
        "first_call_s": first,
        "wall_s": best,
        "seed_steps_per_s": seeds * steps / best,
        "engine_only_wall_s": eng,
        "engine_only_seed_steps_per_s": None if eng is None else seeds * steps / eng,
    }


@partial(jax.jit, static_argnums=(1, 2))
def _raw_normal(keys: jax.Array, d: int, steps: int) -> jax.Array:
    """One (1, d) float32 normal per seed-step; the key is split per step as in ``Full``."""

    def one(carry):
        key, acc = carry
        key, kx = jax.random.split(key)
        x = jax.random.normal(kx, (1, d), jnp.float32)
        return key, acc + jnp.sum(x)  # consume every entry so nothing is elided

    vone = jax.vmap(one)
    acc0 = jnp.zeros(keys.shape[0], jnp.float32)
    _, acc = lax.fori_loop(0, steps, lambda _, c: vone(c), (keys, acc0))
    return acc


@partial(jax.jit, static_argnums=(2,))
def _raw_chain(keys: jax.Array, d, steps: int) -> jax.Array:
    """The random variates of one chain step (p = 1, batch 1) with jax's default samplers:
    four keys split per step, a (1, 2) and a (1,) normal and a chi^2(d - 2) draw."""

    def one(carry):
        key, acc = carry
        key, ky, kxi, kk = jax.random.split(key, 4)
        y = jax.random.normal(ky, (1, 2))
        xi = jax.random.normal(kxi, (1,))
        g = jax.random.chisquare(kk, d - 2.0, (1, 1))
        return key, acc + jnp.sum(y) + jnp.sum(xi) + jnp.sum(g)

    vone = jax.vmap(one)
    acc0 = jnp.zeros(keys.shape[0])
    _, acc = lax.fori_loop(0, steps, lambda _, c: vone(c), (keys, acc0))
    return acc


def bench_raw_chain(d: int, seeds: int, steps: int, repeat: int) -> dict:
    from sgdlab.engines._driver import seed_keys

    keys = seed_keys(0, seeds)
    first, best, _ = _timed(lambda: jax.block_until_ready(_raw_chain(keys, jnp.asarray(float(d)), steps)), repeat)
    return {"d": d, "seeds": seeds, "steps": steps, "first_call_s": first, "wall_s": best,
            "seed_steps_per_s": seeds * steps / best}


def bench_float32(d: int, seeds: int, steps: int, repeat: int) -> dict:
    """Chain(dtype="float32") against the float64 chain on the same problem: throughput of
    both and accuracy in law (independent streams): the largest gap between the two mean
    overlaps over the records in units of its standard error, and the KS p-value of the
    final overlaps."""
    import numpy as np
    from scipy import stats

    problem, student, _ = _sgd_args(d, steps)
    training = Training(lr=0.1 / d, steps=steps, spherical=True, record_every=max(1, steps // 20), init=0.3)
    out = {"d": d, "seeds": seeds, "steps": steps}
    res = {}
    for dt in ("float64", "float32"):
        first, best, r = _timed(lambda dt=dt: run(problem, student, training, engine=Chain(dtype=dt), seeds=seeds,
                                                  seed=0 if dt == "float64" else 1), repeat)
        out[dt] = {"wall_s": best, "first_call_s": first, "seed_steps_per_s": seeds * steps / best}
        res[dt] = r.M[:, :, 0, 0]
    a, b = res["float64"][:, 1:], res["float32"][:, 1:]  # record 0 is the common start m0
    se = np.sqrt(a.var(axis=0) / seeds + b.var(axis=0) / seeds)
    z = np.abs(a.mean(axis=0) - b.mean(axis=0)) / np.where(se > 0, se, np.inf)
    out["max_mean_gap_in_se"] = float(z.max())
    out["final_ks_pvalue"] = float(stats.ks_2samp(a[:, -1], b[:, -1]).pvalue)
    out["f32_over_f64"] = out["float32"]["seed_steps_per_s"] / out["float64"]["seed_steps_per_s"]
    return out


def bench_batch(d: int, seeds: int, batch: int, steps: int, repeat: int) -> dict:
    """Chain with a large minibatch (the reproductions' regime): seed-samples per second."""
    problem = Problem(d=d, link="h3")
    training = Training(lr=batch * 0.1 * d**-1.5, batch=batch, steps=steps, spherical=True, record_every=steps,
                        init=0.3)
    first, best, _ = _timed(lambda: run(problem, Student(activation="h3"), training, engine=Chain(), seeds=seeds),
                            repeat)
    return {"d": d, "seeds": seeds, "batch": batch, "steps": steps, "wall_s": best, "first_call_s": first,
            "samples_per_s": seeds * batch * steps / best}


def bench_raw(d: int, seeds: int, steps: int, repeat: int) -> dict:
    from sgdlab.engines._driver import seed_keys

    keys = seed_keys(0, seeds)  # the keys `run` gives its seeds
    first, best, _ = _timed(lambda: jax.block_until_ready(_raw_normal(keys, d, steps)), repeat)
    return {
        "d": d,
        "seeds": seeds,
        "steps": steps,
        "first_call_s": first,
        "wall_s": best,
        "seed_steps_per_s": seeds * steps / best,
        "normals_per_s": seeds * steps * d / best,
    }


def bench_ode(steps: int, repeat: int) -> dict:
    d = ODE_D
    problem = Problem(d=d, link="h3")
    student = Student(activation="h3")
    lr = ODE_LR_D / d
    training = Training(lr=lr, steps=steps, spherical=True, record_every=steps // 100, init=ODE_M0)
    first, best, res = _timed(lambda: run(problem, student, training, engine=ODE()), repeat)
    return {
        "d": d,
        "lr": lr,
        "init": ODE_M0,
        "steps": steps,
        "record_every": steps // 100,
        "first_call_s": first,
        "wall_s": best,
        "escape_step": res.escape()[0],  # None: never
        "diverged_step": res.diverged()[0],
    }


def machine_info(device: str) -> dict:
    u = platform.uname()
    dev = jax.devices()[0]
    return {
        "device_label": device,
        "processor": platform.processor() or u.machine,
        "uname": f"{u.system} {u.release} {u.machine}",
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_device": getattr(dev, "device_kind", str(dev)),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def evaluate(rows: list[dict]) -> list[dict]:
    chain = [r["chain"]["seed_steps_per_s"] for r in rows]
    chain_e = [r["chain"]["engine_only_seed_steps_per_s"] for r in rows]
    targets = []
    flat = max(chain) / min(chain)
    flat_e = None if None in chain_e else max(chain_e) / min(chain_e)
    dims = [r["d"] for r in rows]
    lo, hi = _sci(min(dims)), _sci(max(dims))
    targets.append(
        {
            "name": f"chain throughput flat in d (max/min <= {CHAIN_FLAT_MAX}x, d = {lo}..{hi})",
            "value": flat,
            "pass": flat <= CHAIN_FLAT_MAX,
            "detail": f"max/min = {flat:.2f}x (engine only {_opt(flat_e, '.2f')}x)",
        }
    )
    def ratio_target(d: int, key: str, minimum: float, name: str, fmt: str) -> None:
        at = [r for r in rows if r["d"] == d]
        if at:
            v, v_e = at[0][key], at[0][f"engine_only_{key}"]
            targets.append({"name": name, "value": v, "pass": v >= minimum,
                            "detail": f"{key.replace('_over_', '/')} = {v:{fmt}} (engine only {_opt(v_e, fmt)})"})

    ratio_target(10**4, "chain_over_full", CHAIN_OVER_FULL_MIN, f"chain >= {CHAIN_OVER_FULL_MIN:.0f}x full at d = 10^4",
                 ".0f")
    ratio_target(10**3, "chain_over_raw", CHAIN_OVER_RAW_MIN,
                 f"chain >= {CHAIN_OVER_RAW_MIN}x its variates drawn by jax's samplers at d = 10^3", ".2f")
    worst = min(rows, key=lambda r: r["full_over_raw"])
    targets.append(
        {
            "name": f"full within 2x of raw Gaussian sampling at each d (full/raw >= {FULL_OVER_RAW_MIN})",
            "value": worst["full_over_raw"],
            "pass": worst["full_over_raw"] >= FULL_OVER_RAW_MIN,
            "detail": "full/raw = "
            + ", ".join(
                f"{r['full_over_raw']:.2f} ({_opt(r['engine_only_full_over_raw'], '.2f')}) at d={_sci(r['d'])}"
                for r in rows
            ),
        }
    )
    return targets


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def _opt(x: float | None, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def _sci(x: float) -> str:
    e = len(str(int(x))) - 1
    return f"10^{e}" if int(x) == 10**e else f"{x:g}"


def _rate(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.3g}".replace("e+0", "e").replace("e+", "e")


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"Machine: {m['cpu_model']} ({m['cpu_count']} cores visible), {m['uname']}; "
        f"jax {m['jax']} on `{m['jax_backend']}` ({m['jax_device']}); python {m['python']}; {m['date']}"
        + (" — **quick run**" if report["quick"] else "")
        + ".",
        "",
        "Seed-steps per second (second of two identical calls; single-index h3, spherical, p = 1, batch 1, "
        "lr = 0.1/d, init 0.3). `run` = wall time of `sgdlab.run`; *engine* = the compiled step loop alone "
        "(`drive` on the cached built engine, i.e. without `run`'s per-call bookkeeping). "
        "Ratios: `run` numbers, engine-only in parentheses.",
        "",
        "| d | chain (f64) seeds x steps | chain run | chain engine | raw chain draws | chain/raw "
        "| full (f32) seeds x steps | full run | full engine | raw N(0,1)^d | full/raw | chain/full |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        c, f, w = r["chain"], r["full"], r["raw"]
        lines.append(
            f"| {_sci(r['d'])} | {c['seeds']} x {c['steps']} | {_rate(c['seed_steps_per_s'])} "
            f"| {_rate(c['engine_only_seed_steps_per_s'])} | {_rate(r['raw_chain']['seed_steps_per_s'])} "
            f"| {r['chain_over_raw']:.2f} ({_opt(r['engine_only_chain_over_raw'], '.2f')}) "
            f"| {f['seeds']} x {f['steps']} | {_rate(f['seed_steps_per_s'])} "
            f"| {_rate(f['engine_only_seed_steps_per_s'])} | {_rate(w['seed_steps_per_s'])} "
            f"| {r['full_over_raw']:.2f} ({_opt(r['engine_only_full_over_raw'], '.2f')}) "
            f"| {r['chain_over_full']:.0f}x ({_opt(r['engine_only_chain_over_full'], '.0f')}x) |"
        )
    for b in report.get("batch", []):
        lines.append(
            f"\nChain with batch {b['batch']} (the reproductions' regime), d = {_sci(b['d'])}, "
            f"{b['seeds']} seeds x {b['steps']} steps: {_rate(b['samples_per_s'])} seed-samples/s."
        )
    f32 = report.get("float32")
    if f32:
        lines.append(
            f"\nChain float32 vs float64 (d = {_sci(f32['d'])}, {f32['seeds']} seeds x {f32['steps']} steps, "
            f"independent streams): {_rate(f32['float32']['seed_steps_per_s'])} vs "
            f"{_rate(f32['float64']['seed_steps_per_s'])} seed-steps/s ({f32['f32_over_f64']:.2f}x); "
            f"largest gap of the mean overlap over 20 records {f32['max_mean_gap_in_se']:.2f} standard errors, "
            f"KS p-value of the final overlaps {f32['final_ks_pvalue']:.3f}."
        )
    lines += [
        "",
        f"ODE (d = {_sci(ODE_D)}, lr = {ODE_LR_D:g}/d, m0 = {ODE_M0}, spherical, 100 records, second call):",
        "",
        "| steps | wall time | escape step | first call (compile) |",
        "|---|---|---|---|",
    ]
    for o in report["ode"]:
        esc = o["escape_step"]
        esc = "never" if esc is None or esc < 0 else f"{esc:.4g}"
        lines.append(f"| {_sci(o['steps'])} | {o['wall_s']:.2f} s | {esc} | {o['first_call_s']:.1f} s |")
    lines += ["", "Targets (evaluated on the `run` numbers; engine-only in parentheses):", ""]
    for t in report["targets"]:
        lines.append(f"- **{'PASS' if t['pass'] else 'FAIL'}** {t['name']}: {t['detail']}")
    return "\n".join(lines) + "\n"


def update_md(label: str, body: str) -> None:
    start, end = f"<!-- engines:{label}:start -->", f"<!-- engines:{label}:end -->"
    block = f"{start}\n{body}{end}"
    text = MD.read_text() if MD.exists() else "# Benchmarks\n"
    if start in text and end in text:
        i, j = text.index(start), text.index(end) + len(end)
        text = text[:i] + block + text[j:]
    else:
        text = text.rstrip("\n") + f"\n\n## {label.upper()}\n\n{block}\n"
    MD.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke version")
    ap.add_argument("--device", default=None, help="label for the results (default: jax platform)")
    ap.add_argument("--repeat", type=int, default=1, help="timed calls after the warm-up; the best is kept")
    ap.add_argument("--update-md", action="store_true", help="rewrite this label's section of BENCHMARKS.md")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default results/engines-<label>.json)")
    args = ap.parse_args(argv)
    label = args.device or jax.devices()[0].platform

    accel = jax.default_backend() != "cpu"
    dims = QUICK_DIMS if args.quick else DIMS
    cshape = QUICK_CHAIN_SHAPE if args.quick else (GPU_CHAIN_SHAPE if accel else CHAIN_SHAPE)
    fshape = QUICK_FULL_SHAPE if args.quick else (GPU_FULL_SHAPE if accel else FULL_SHAPE)
    horizons = QUICK_ODE_HORIZONS if args.quick else ODE_HORIZONS

    rows = []
    for d in dims:
        c = bench_engine(Chain(), d, *cshape[d], args.repeat)
        print(f"chain d={_sci(d)}: {_rate(c['seed_steps_per_s'])} seed-steps/s ({c['wall_s']:.2f} s)", flush=True)
        f = bench_engine(Full(), d, *fshape[d], args.repeat)
        print(f"full  d={_sci(d)}: {_rate(f['seed_steps_per_s'])} seed-steps/s ({f['wall_s']:.2f} s)", flush=True)
        w = bench_raw(d, *fshape[d], args.repeat)
        print(f"raw   d={_sci(d)}: {_rate(w['seed_steps_per_s'])} seed-steps/s ({w['wall_s']:.2f} s)", flush=True)
        rc = bench_raw_chain(d, *cshape[d], args.repeat)
        print(f"raw chain draws d={_sci(d)}: {_rate(rc['seed_steps_per_s'])} seed-steps/s", flush=True)
        rows.append(
            {
                "d": d,
                "chain": c,
                "full": f,
                "raw": w,
                "raw_chain": rc,
                "chain_over_raw": c["seed_steps_per_s"] / rc["seed_steps_per_s"],
                "engine_only_chain_over_raw": _div(c["engine_only_seed_steps_per_s"], rc["seed_steps_per_s"]),
                "full_over_raw": f["seed_steps_per_s"] / w["seed_steps_per_s"],
                "chain_over_full": c["seed_steps_per_s"] / f["seed_steps_per_s"],
                "engine_only_full_over_raw": _div(f["engine_only_seed_steps_per_s"], w["seed_steps_per_s"]),
                "engine_only_chain_over_full": _div(
                    c["engine_only_seed_steps_per_s"], f["engine_only_seed_steps_per_s"]
                ),
            }
        )
    bseeds, bbatch, bsteps = BATCH_SHAPE["gpu" if accel else "cpu"]
    if args.quick:
        bseeds, bbatch, bsteps = 16, 16, 50
    batch_rows = []
    for d in (10**3, 10**5):
        b = bench_batch(d, bseeds, bbatch, bsteps, args.repeat)
        print(f"chain batch {bbatch} d={_sci(d)}: {_rate(b['samples_per_s'])} seed-samples/s", flush=True)
        batch_rows.append(b)
    f32 = bench_float32(10**3, *((64, 200) if args.quick else cshape[10**3]), args.repeat)
    print(f"chain float32 d=10^3: {f32['f32_over_f64']:.2f}x float64; mean gap {f32['max_mean_gap_in_se']:.2f} SE, "
          f"KS p = {f32['final_ks_pvalue']:.3f}", flush=True)
    odes = []
    for steps in horizons:
        o = bench_ode(steps, args.repeat)
        print(f"ode   steps={_sci(steps)}: {o['wall_s']:.2f} s, escape step {o['escape_step']}", flush=True)
        odes.append(o)

    report = {
        "benchmark": "engines",
        "quick": args.quick,
        "machine": machine_info(label),
        "config": {
            "problem": "single-index h3, student h3, p = 1, batch 1, spherical SGD, init m0 = 0.3, lr = 0.1/d",
            "timing": f"best of {args.repeat} call(s) after an identical warm-up call",
        },
        "rows": rows,
        "batch": batch_rows,
        "float32": f32,
        "ode": odes,
    }
    report["targets"] = evaluate(rows)

    out = args.out or RESULTS / f"engines-{label}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    print()
    print(md)
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    if args.update_md:
        if args.quick:
            print("--update-md ignored for --quick runs", file=sys.stderr)
        else:
            update_md(label, md)
            print(f"updated {MD.relative_to(ROOT)} section '{label}'")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
