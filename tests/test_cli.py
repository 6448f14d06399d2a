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


# --------------------------------------------------------------------------------------
# safe outputs
# --------------------------------------------------------------------------------------


def test_out_is_a_file_or_a_folder_of_another_run(config_file, chain_run, tmp_path):
    """Planted bugs caught: --out pointing at a file (a traceback before), and a run replacing
    a folder that holds another configuration's run without --force."""
    f = tmp_path / "file.txt"
    f.write_text("keep me")
    res = runner.invoke(app, ["run", str(config_file), "--out", str(f)])
    assert res.exit_code == 2 and res.stderr.startswith("error: --out: got ") and "existing file" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and f.read_text() == "keep me"
    before = (chain_run / "summary.json").read_text()
    res = runner.invoke(app, ["run", str(config_file), "--out", str(chain_run), "--set", "train.lr=0.04"])
    assert res.exit_code == 2 and "--force" in res.stderr
    assert (chain_run / "summary.json").read_text() == before


def test_force_and_reruns_leave_no_stale_files(config_file, tmp_path):
    """A rerun of the same configuration, or --force over another run, replaces the run's files
    together: the old figure does not stay beside new data, other files are left alone.
    Planted bug caught: writing the new files over the old folder (figure.png stays)."""
    out = tmp_path / "r"
    assert runner.invoke(app, ["run", str(config_file), "--out", str(out)]).exit_code == 0
    (out / "figure.png").write_bytes(b"old figure")
    (out / "notes.txt").write_text("mine")
    res = runner.invoke(app, ["run", str(config_file), "--out", str(out)])  # same settings: allowed
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "summary.json", "trajectory.parquet"]
    (out / "figure.png").write_bytes(b"old figure")
    res = runner.invoke(app, ["run", str(config_file), "--out", str(out), "--set", "train.lr=0.04", "--force"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "summary.json", "trajectory.parquet"]
    assert read_run(out)[1]["config"]["train"]["lr"] == 0.04
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# --------------------------------------------------------------------------------------
# one-line errors
# --------------------------------------------------------------------------------------

BAD_MORE = [
    (["--seeds", "100000000000000000000"], "seeds", "100000000000000000000"),
    (["--set", "seed=99999999999999999999"], "seed", "99999999999999999999"),
    (["--set", "train.escape_threshold=2"], "train.escape_threshold", "2"),
    (["--engine", "ode", "--seeds", "64"], "seeds", "64"),
    (["--engine", "chain", "--set", "engine=full"], "engine", "full"),
    (["--set", "engine=chian"], "engine", "did you mean 'chain'"),
    (["--set", "train.lrr=1"], "train.lrr", "did you mean 'lr'"),
    (["--set", "student.activation=reul"], "student.activation", "did you mean 'relu'"),
]


@pytest.mark.parametrize(("extra", "field", "text"), BAD_MORE)
def test_more_bad_input_is_one_error_line(config_file, tmp_path, extra, field, text):
    """Each used to be a traceback or to run silently (a threshold nothing reaches, one ODE
    trajectory for 64 seeds, --engine overriding --set engine). Planted bug caught: dropping a
    check (the command then runs and exits 0, or prints a traceback)."""
    res = runner.invoke(app, ["run", str(config_file), "--out", str(tmp_path / "x"), *extra])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}: ") and text in lines[0], res.stderr
    assert "Traceback" not in res.output and "JAX function" not in res.stderr and "pydantic" not in res.stderr


def test_binary_config_and_all_errors_at_once(tmp_path):
    """A binary file is one error line; several invalid keys are reported together, one line
    each. Planted bug caught: only the first error reported (one line instead of three)."""
    f = tmp_path / "bin.toml"
    f.write_bytes(bytes(range(256)))
    res = runner.invoke(app, ["run", str(f)])
    assert res.exit_code == 2 and res.stderr.strip().splitlines() == [
        f"error: config: got '{f}', which is not UTF-8 text; allowed: a TOML file"]
    g = tmp_path / "many.toml"
    g.write_text('d = 12\nengine = "chian"\n[train]\nlrr = 1\n[student]\nactivation = "reul"\n')
    res = runner.invoke(app, ["run", str(g)])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 3, res.stderr
    assert {ln.split(":")[1].strip() for ln in lines} == {"engine", "train.lrr", "student.activation"}


def test_hermite_override_replaces_the_files_link(config_file):
    """--set target.hermite=... on a config with a link replaces the link (they are
    alternatives) instead of failing with 'exactly one of link, hermite'."""
    res = runner.invoke(app, ["run", str(config_file), "--set", "target.hermite=[0,0,1]", "--dry-run"])
    assert res.exit_code == 0, res.output
    cfg = json.loads(res.stdout[: res.stdout.index("\n}\n") + 2])
    assert cfg["target"]["hermite"] == [0.0, 0.0, 1.0] and cfg["target"]["link"] is None


@pytest.mark.parametrize(("links", "text"), [("gelu", "did you mean 'relu'"), (",", "a comma list of link names")])
def test_reproduce_links_are_checked(links, text):
    """--links gelu was a traceback deep in the run, --links , ran the default series."""
    res = runner.invoke(app, ["reproduce", "info-exponent", "--quick", "--links", links, "--dry-run"])
    assert res.exit_code == 2 and res.stderr.startswith("error: --links: ") and text in res.stderr, res.output


# --------------------------------------------------------------------------------------
# honest tables
# --------------------------------------------------------------------------------------


def test_median_escape_is_kaplan_meier_with_censoring():
    """12% escaped used to show the median over the escaped seeds ('318'): the Kaplan-Meier
    median is undefined then and shown as '> horizon'. Planted bug caught: median over the
    escaped seeds (10 instead of 20 below, and 318 instead of '> 400')."""
    from sgdlab.cli import _summary_median
    from sgdlab.store import _escape_stats

    few = {"n_seeds": 8, "steps": 400, "escape_step": [318] + [None] * 7, "diverged": [None] * 8, "n_diverged": 0}
    assert _summary_median(few) == "> 400"
    assert _escape_stats(few)["median_escape_step"] is None and _escape_stats(few)["horizon"] == 400
    half = {"n_seeds": 3, "steps": 100, "escape_step": [10, 20, None], "diverged": [None] * 3, "n_diverged": 0}
    assert _summary_median(half) == "20" and _escape_stats(half)["median_escape_step"] == 20.0
    # a seed that diverged at step 5 without escaping is censored there (no longer at risk at
    # step 10: S(10) = 1 - 1/2), not at the horizon (S(10) = 2/3, the median would be 30)
    div = {"n_seeds": 3, "steps": 100, "escape_step": [10, None, 30], "diverged": [None, 5, None], "n_diverged": 1}
    assert _summary_median(div) == "10"


@pytest.fixture(scope="module")
def sweep_store(config_file, tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("store")
    res = runner.invoke(app, ["sweep", str(config_file), "--grid", "train.lr=0.05,0.04", "--grid",
                              "train.init=0.3,0.4", "--workers", "1", "--store", str(store)])
    assert res.exit_code == 0, res.output
    return store


def test_tables_fit_80_columns_keeping_the_useful_ones(sweep_store):
    """At 80 columns (a pipe) every line fits and the varying settings and escape columns
    stay; what is left out is named. Planted bug caught: a fixed 200-column table in pipes,
    or rich squeezing every column (cut values such as '0.0…')."""
    res = runner.invoke(app, ["results", "--store", str(sweep_store)], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert max(len(ln) for ln in lines) <= 80, res.stdout
    header = next(ln for ln in lines if "status" in ln)
    for col in ("status", "train.lr", "train.init", "escaped", "median escape"):
        assert col in header, header
    assert "…" not in res.stdout
    assert "left out at 80 columns" in res.stdout and "--format csv" in res.stdout


def test_results_csv_and_json(sweep_store):
    import csv
    import io

    res = runner.invoke(app, ["results", "--store", str(sweep_store), "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert res.exit_code == 0 and len(rows) == 4
    assert {"key", "status", "train.lr", "median_escape_step", "horizon", "frac_escaped"} <= set(rows[0])
    assert {r["horizon"] for r in rows} == {"10"}
    res = runner.invoke(app, ["results", "--store", str(sweep_store), "--format", "json"])
    data = json.loads(res.stdout)
    assert len(data) == 4 and sorted({r["train.lr"] for r in data}) == [0.04, 0.05]
    res = runner.invoke(app, ["results", "--store", str(sweep_store), "--format", "xml"])
    assert res.exit_code == 2 and res.stderr.startswith("error: --format: got 'xml'")


@pytest.mark.parametrize(("suffix", "magic"), [(".pdf", b"%PDF"), (".svg", b"<?xml"), (".png", b"\x89PNG")])
def test_plot_writes_the_format_of_its_extension(chain_run, full_run, tmp_path, suffix, magic):
    """Planted bug caught: PNG data written whatever the extension (format='png')."""
    out = tmp_path / f"fig{suffix}"
    res = runner.invoke(app, ["plot", str(chain_run), str(full_run), "--out", str(out), "--style", "paper"])
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[: len(magic)] == magic


def test_plot_labels_runs_by_the_settings_that_differ(chain_run, full_run):
    """The chain run (3 seeds, 10 steps) and the full run (2 seeds, 20 steps) are told apart
    by engine, seeds and train.steps, not by a generic label. Planted bug caught: labels
    'chain, d=12' and 'full, d=12' that hide the other differences."""
    from sgdlab.plot import differing_labels, load_curves

    labels = differing_labels([load_curves(d)["summary"] for d in (chain_run, full_run)])
    assert labels == ["engine=chain, seeds=3, train.steps=10", "engine=full, seeds=2, train.steps=20"]
    res = runner.invoke(app, ["plot", str(chain_run), "--out", "x.jpg"])
    assert res.exit_code == 2 and res.stderr.startswith("error: --out: got 'x.jpg'; allowed: a file ending in")


# --------------------------------------------------------------------------------------
# niceties
# --------------------------------------------------------------------------------------


def test_version_help_and_dry_run(config_file, tmp_path, monkeypatch):
    """--version; help that renders its default folder and integer types (rich used to eat
    '[results/...]'); --dry-run prints the resolved configuration, run key and seed-steps and
    writes nothing."""
    from sgdlab import __version__

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"sgdlab {__version__}"
    res = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert "results/<config>-<engine>-<key of the settings>" in res.stdout and "<int>" in res.stdout
    assert "SYSTEMS" not in res.stdout
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["run", str(config_file), "--dry-run", "--seeds", "5"])
    assert res.exit_code == 0, res.output
    assert '"seeds": 5' in res.stdout and "dry run: 1 run" in res.stdout and "50 seed-steps" in res.stdout
    assert not (tmp_path / "results").exists()
    res = runner.invoke(app, ["sweep", str(config_file), "--grid", "train.lr=0.1,0.2,0.3", "--dry-run",
                              "--store", str(tmp_path / "s")])
    assert res.exit_code == 0 and "dry run: 3 runs, 0 in the store, 3 to compute; 90 seed-steps" in res.stdout
    assert not (tmp_path / "s").exists()


def test_reproduce_list_and_dry_run():
    """--list is driven by REPRODUCTIONS (a reproduction added there is listed with its
    paper); --dry-run gives the planned runs. Planted bug caught: a hard-coded list."""
    from sgdlab.reproduce import REPRODUCTIONS

    res = runner.invoke(app, ["reproduce", "--list"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for name in REPRODUCTIONS:
        assert any(ln.startswith(f"{name}: ") for ln in res.stdout.splitlines()), name
    assert "Ben Arous, Gheissari and Jagannath" in res.stdout and "about 29 min" in res.stdout
    res = runner.invoke(app, ["reproduce", "ssi", "--quick", "--dry-run", "--store", "/nonexistent"])
    assert res.exit_code == 0, res.output
    assert "dry run: " in res.stdout and " to compute; " in res.stdout
