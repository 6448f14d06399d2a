"""The Result in the ecosystem's shapes: pandas, xarray, save/load, plot, repr, the missing-value
convention of escape_step, engine names in ``run``, and the process-wide float64 switch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest

from sgdlab import Chain, Problem, Result, Student, Training, run
from sgdlab.analysis import escape_from_result, escape_statistics
from sgdlab.io import SUMMARY, TRAJECTORY

S, R, P, D = 3, 4, 2, 1
ESCAPE = [10, -1, 30]  # engines hand -1 ("never") to the Result
DIVERGED = [-1, -1, 20]


def _result() -> Result:
    rng = np.random.default_rng(0)
    Q = rng.normal(size=(S, R, P, P))
    return Result(
        engine="chain",
        d=50,
        batch=2,
        steps=np.arange(R, dtype=np.int64) * 10,
        M=rng.normal(size=(S, R, P, D)),
        Q=Q @ np.swapaxes(Q, -1, -2) + np.eye(P),
        a=np.ones((S, R, P)),
        risk=rng.uniform(size=(S, R)),
        escape_step=np.array(ESCAPE),
        diverged_step=np.array(DIVERGED),
        seeds=np.arange(S),
        wall_time=1.5,
        config={"d": 50, "train": {"lr": 0.01, "init": "random"}},
    )


def test_escape_step_missing_is_nan_in_python_and_null_in_json(tmp_path):
    """"Never" is NaN in Result.escape_step / diverged_step, null in summary.json, NaN again
    after load, and the Kaplan-Meier statistics read NaN as censored. Catches the old -1 vs
    null split (a -1 left in Python), a loader that brings back -1, and escape_statistics
    that cannot read NaN (its old int64 cast)."""
    res = _result()
    assert np.isnan(res.escape_step[1]) and res.escape_step[0] == 10 and res.escape_step[2] == 30
    assert np.isnan(res.diverged_step[:2]).all() and res.diverged_step[2] == 20
    assert res.escape() == [10, None, 30] and res.diverged() == [None, None, 20]
    res.save(tmp_path / "run")
    summary = json.loads((tmp_path / "run" / SUMMARY).read_text())
    assert summary["escape_step"] == [10, None, 30] and summary["diverged"] == [None, None, 20]
    back = Result.load(tmp_path / "run")
    np.testing.assert_array_equal(back.escape_step, res.escape_step)
    np.testing.assert_array_equal(back.diverged_step, res.diverged_step)
    # NaN and -1 are the same censoring; seed 1 censored at the horizon 30
    nan = escape_statistics([10, np.nan, 30, np.nan], 30)
    assert nan == escape_statistics([10, -1, 30, -1], 30) and nan.n_escaped == 2
    assert escape_from_result(res).n_escaped == 2


def test_save_load_keeps_arrays_and_config(tmp_path):
    """save/load round trip: every array, the engine, d, batch and the resolved configuration.
    Catches a loader that drops ``config`` (then a loaded run cannot say how it was made)."""
    res = _result()
    folder = res.save(tmp_path / "run")
    back = Result.load(folder)
    for name in ("steps", "M", "Q", "a", "risk", "seeds"):
        np.testing.assert_allclose(getattr(back, name), getattr(res, name), err_msg=name)
    assert (back.engine, back.d, back.batch) == (res.engine, res.d, res.batch)
    assert back.config == res.config


def test_to_pandas_is_the_parquet_table(tmp_path):
    """to_pandas() is the long table of trajectory.parquet, column for column and row for row.
    Catches a frame in another layout (wide by seed) or with other column names."""
    res = _result()
    res.save(tmp_path / "run")
    on_disk = pq.read_table(tmp_path / "run" / TRAJECTORY).to_pandas()
    frame = res.to_pandas()
    assert list(frame.columns) == list(on_disk.columns)
    assert len(frame) == S * R
    for c in frame.columns:
        np.testing.assert_allclose(frame[c].to_numpy(float), on_disk[c].to_numpy(float), err_msg=c)


def test_to_xarray_dims_and_values():
    """to_xarray(): M has dims (seed, step, row, direction) with the Result's values at labelled
    coordinates; t = samples / d along step; escape_step NaN for "never". Catches swapped axes
    (row vs direction, seed vs step) and a -1 in the dataset."""
    res = _result()
    ds = res.to_xarray()
    assert ds.M.dims == ("seed", "step", "row", "direction")
    assert ds.Q.dims == ("seed", "step", "row", "row2")
    assert float(ds.M.sel(seed=1, step=20, row=1, direction=0)) == res.M[1, 2, 1, 0]
    assert float(ds.Q.sel(seed=0, step=30, row=0, row2=1)) == res.Q[0, 3, 0, 1]
    np.testing.assert_allclose(ds.t, res.steps * res.batch / res.d)
    assert np.isnan(ds.escape_step.sel(seed=1)) and ds.attrs["d"] == 50


def test_missing_optional_dependency_is_one_line(monkeypatch):
    """Without pandas, to_pandas() says in one line what to install (not a bare traceback)."""
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(ImportError, match=r"^Result.to_pandas\(\) needs pandas; install it with: pip install "):
        _result().to_pandas()


def test_repr_is_short():
    """repr names engine, d, seeds, steps and escapes in one short line instead of the arrays.
    Catches the dataclass repr (thousands of characters of numbers)."""
    text = repr(_result())
    assert "\n" not in text and len(text) < 250, text
    assert "engine='chain'" in text and "seeds=3" in text and "escaped=2/3" in text


def test_plot_writes_the_format_of_the_extension(tmp_path):
    """Result.plot() returns a figure (overlap and risk panels) and writes PNG or PDF by the
    extension: catches a plot that always writes PNG bytes."""
    res = _result()
    fig = res.plot(tmp_path / "f.png")
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "population risk"
    res.plot(tmp_path / "f.pdf")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "f.pdf").read_bytes()[:5] == b"%PDF-"


def test_engine_by_name():
    """run(..., engine="chain") is run(..., engine=Chain()) bit for bit, and a wrong name is a
    one-line error naming the field, the value and the choices."""
    args = (Problem(d=100, link="h2"), Student(activation="h2"), Training(lr=1e-3, steps=40, record_every=20))
    by_name = run(*args, engine="chain", seeds=2)
    by_object = run(*args, engine=Chain(), seeds=2)
    np.testing.assert_array_equal(by_name.M, by_object.M)
    assert by_name.engine == "chain" and by_name.config["engine"] == "chain"
    assert by_name.config["training"]["lr"] == 1e-3
    with pytest.raises(ValueError, match=r"^engine: got 'gpu'; allowed: 'full', 'chain', 'ode'"):
        run(*args, engine="gpu")


def test_x64_switch_is_documented_and_guarded():
    """In a fresh process: before ``import sgdlab`` JAX defaults to float32; the import turns on
    float64 for the process (as the package docstring says); explicit float32 arrays stay
    float32; and turning the switch off afterwards makes run() stop with one line rather than
    compute in float32. Catches a run() that silently computes in single precision."""
    code = textwrap.dedent(
        """
        import jax, jax.numpy as jnp
        assert jnp.ones(1).dtype == jnp.float32
        import sgdlab
        assert jax.config.jax_enable_x64 and jnp.ones(1).dtype == jnp.float64
        assert (jnp.ones(2, dtype=jnp.float32) * 2).dtype == jnp.float32
        assert "jax_enable_x64" in sgdlab.__doc__
        jax.config.update("jax_enable_x64", False)
        from sgdlab import Problem, Student, Training, run
        try:
            run(Problem(d=20, link="h2"), Student(activation="h2"), Training(lr=1e-3, steps=4), engine="ode")
        except RuntimeError as e:
            print("ERROR", e)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ERROR jax_enable_x64: got False"), out.stdout
