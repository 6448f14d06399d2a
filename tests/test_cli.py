"""The sgdlab command line: run, plot, info and one-line errors."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from sgdlab.cli import app
from sgdlab.io import read_run

runner = CliRunner()

# p = 2 neurons with a trained second layer, r = 1 teacher direction; tiny and fast.
TINY = """
d = 12
seeds = 3
seed = 1
engine = "chain"

[target]
link = "h2"

[student]
width = 2
activation = "h2"
second_layer = "trained"

[train]
lr = 0.05
batch = 2
steps = 10
record_every = 5
spherical = true
"""
P2_COLUMNS = ["seed", "step", "samples", "t", "M_0_0", "M_1_0", "Q_0_0", "Q_0_1", "Q_1_1", "a_0", "a_1", "risk"]
SUMMARY_KEYS = {
    "config", "engine", "versions", "wall_time", "escape_step", "diverged", "n_diverged", "n_seeds",
}  # fmt: skip


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    f.write_text(TINY)
    return f


@pytest.fixture(scope="module")
def chain_run(config_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "chain"
    res = runner.invoke(app, ["run", str(config_file), "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def full_run(config_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "full"
    args = ["run", str(config_file), "--engine", "full", "--seeds", "2", "--out", str(out), "--set", "train.steps=20"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return out


def test_run_writes_contract_columns_and_summary(chain_run):
    table = pq.read_table(chain_run / "trajectory.parquet")
    assert table.column_names == P2_COLUMNS
    cols = {k: table.column(k).to_numpy() for k in table.column_names}
    steps = np.unique(cols["step"])
    np.testing.assert_array_equal(steps, [0, 5, 10])
    assert table.num_rows == 3 * len(steps)  # seeds x records
    np.testing.assert_array_equal(np.unique(cols["seed"]), [0, 1, 2])
    np.testing.assert_array_equal(cols["samples"], cols["step"] * 2)
    np.testing.assert_allclose(cols["t"], cols["samples"] / 12)
    np.testing.assert_allclose(cols["Q_0_0"], 1.0, atol=1e-9)  # spherical: unit rows
    assert np.all(np.isfinite(cols["risk"]))

    summary = json.loads((chain_run / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["engine"] == "chain" and summary["n_seeds"] == 3
    assert len(summary["escape_step"]) == 3 and len(summary["diverged"]) == 3
    assert all(e is None or isinstance(e, int) for e in summary["escape_step"])
    assert summary["n_diverged"] == sum(x is not None for x in summary["diverged"])
    assert summary["wall_time"] > 0
    assert {"sgdlab", "jax", "jaxlib", "numpy", "diffrax", "python"} <= set(summary["versions"])
    cfg = summary["config"]
    assert cfg["d"] == 12 and cfg["student"]["width"] == 2 and cfg["train"]["lr"] == 0.05
    assert cfg["ode"]["second_order"] is True and cfg["full"]["dtype"] == "float32"  # defaults resolved
    # no leftovers of the atomic writes
    assert sorted(p.name for p in chain_run.iterdir()) == ["summary.json", "trajectory.parquet"]


def test_read_run_round_trip(chain_run):
    table, summary = read_run(chain_run)
    assert table.column_names == summary["columns"] == P2_COLUMNS


def test_set_and_engine_overrides_reach_the_run(full_run):
    table, summary = read_run(full_run)
    assert summary["engine"] == "full" and summary["config"]["engine"] == "full"
    assert summary["n_seeds"] == 2 and summary["config"]["train"]["steps"] == 20
    assert table.column("step").to_numpy().max() == 20
    assert summary["steps"] == 20


def test_default_out_dir_depends_on_the_settings(config_file, tmp_path, monkeypatch):
    """Planted bug: the default folder results/<config>-<engine> without the settings' key (a
    --set run replaced the earlier run): the two runs below would share one folder."""
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["run", str(config_file)])  # same model as chain_run: compiled already
    assert res.exit_code == 0, res.output
    res2 = runner.invoke(app, ["run", str(config_file), "--set", "train.lr=0.04"])
    assert res2.exit_code == 0, res2.output
    dirs = sorted((tmp_path / "results").iterdir())
    assert len(dirs) == 2 and all(d.name.startswith("tiny-chain-") for d in dirs), dirs
    lrs = sorted(read_run(d)[1]["config"]["train"]["lr"] for d in dirs)
    assert lrs == [0.04, 0.05]
    assert "wrote results/tiny-chain-" in res.stdout


BAD = [
    (["--set", "train.lr=-1"], "train.lr", "-1"),
    (["--set", "student.activation=foo"], "student.activation", "foo"),
    (["--set", "train.lrr=1"], "train.lrr", "1"),
    (["--set", "train.batch=0"], "train.batch", "0"),
    (["--set", "train.init=2"], "train.init", "2"),
    (["--set", "train.lr"], "--set", "train.lr"),
    (["--set", "d=3"], "d", "3"),
    (["--engine", "warp"], "engine", "warp"),
    (["--seeds", "many"], "--seeds", "many"),
    (["--seeds", "0"], "seeds", "0"),
]


@pytest.mark.parametrize(("extra", "field", "value"), BAD)
def test_bad_input_is_one_error_line_with_exit_2(config_file, tmp_path, extra, field, value):
    res = runner.invoke(app, ["run", str(config_file), "--out", str(tmp_path / "x"), *extra])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"error: {field}: ")
    assert value in lines[0] and "allowed" in lines[0]
    assert "Traceback" not in res.output
    assert not (tmp_path / "x").exists()


def test_missing_config_file(tmp_path):
    res = runner.invoke(app, ["run", str(tmp_path / "nope.toml")])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [
        f"error: config: got '{tmp_path / 'nope.toml'}'; allowed: an existing TOML file"
    ]


def test_console_script_reports_one_line(tmp_path):
    """The installed entry point (not only the test runner) prints one line, no traceback."""
    exe = Path(sys.executable).with_name("sgdlab")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from sgdlab.cli import app; app()"]
    f = tmp_path / "c.toml"
    f.write_text("d = 10\n[train]\nbatch = 0\n")
    proc = subprocess.run([*cmd, "run", str(f)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: train.batch: got 0; allowed: a positive integer"]
    assert "Traceback" not in proc.stdout + proc.stderr


def _coefficients(stdout: str) -> dict[int, float]:
    out = {}
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("c_"):
            k, v = line.split("=")[:2]
            out[int(k.strip()[2:])] = float(v.split()[0])
    return out


def test_info_h3():
    res = runner.invoke(app, ["info", "h3"])
    assert res.exit_code == 0, res.output
    c = _coefficients(res.stdout)
    assert sorted(c) == list(range(9))
    assert c[3] == 1.0 and all(c[j] == 0.0 for j in c if j != 3)
    assert "information exponent: 3" in res.stdout


def test_info_He3_and_student_and_coefficient_list():
    res = runner.invoke(app, ["info", "He3", "--K", "5"])
    assert res.exit_code == 0, res.output
    c = _coefficients(res.stdout)
    assert sorted(c) == list(range(6)) and math.isclose(c[3], math.sqrt(6), rel_tol=1e-6)
    assert "2.449" in res.stdout
    # target h2 + h4 with a relu student: relu has c_2 != 0, so the exponent is 2
    res = runner.invoke(app, ["info", "0,0,1,0,1", "--student", "relu"])
    assert res.exit_code == 0, res.output
    assert "information exponent (with student relu): 2" in res.stdout
    # erf has no even coefficients: nothing up to K
    res = runner.invoke(app, ["info", "h2", "--student", "erf", "--K", "6"])
    assert "none up to K = 6" in res.stdout


def test_info_bad_link():
    res = runner.invoke(app, ["info", "cosh"])
    assert res.exit_code == 2
    assert res.stderr.startswith("error: link: unknown link 'cosh'") and len(res.stderr.strip().splitlines()) == 1


def test_plot_writes_png(chain_run, full_run, tmp_path):
    out = tmp_path / "fig.png"
    res = runner.invoke(app, ["plot", str(chain_run), str(full_run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    res = runner.invoke(app, ["plot", str(chain_run)])  # default: <first dir>/figure.png
    assert res.exit_code == 0, res.output
    assert (chain_run / "figure.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_missing_run(tmp_path):
    res = runner.invoke(app, ["plot", str(tmp_path)])
    assert res.exit_code == 2 and res.stderr.startswith("error: run: ")
