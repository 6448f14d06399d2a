"""SIGINT and SIGTERM stop runs within seconds, say so in one line, exit 130 / 143 and keep
what was computed: real signals sent to real ``sgdlab`` processes (no terminal, a
pseudo-terminal, a sweep), plus the driver's chunk loop in this process."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sgdlab import Chain, Problem, Student, Training, _interrupt
from sgdlab.api import _built, _model
from sgdlab.engines._driver import drive, seed_keys

EXE = Path(sys.executable).with_name("sgdlab")
STEPS = 100_000_000  # far more than a test runs: every run here is stopped by a signal
# Seconds from the signal to the exit: at most one chunk (0.5 s), the risk table of the records
# kept (a compilation when its record bucket is new) and the writing; about 2-6 s on an idle
# 2-core machine, 6 s at load 9 and 59 s at load 16 on 2 cores (compilation slows with the
# load): the bound is 30 s on a machine loaded up to 2 processes per core, scaled above that.
MAX_STOP_S = 30 * max(1.0, os.getloadavg()[0] / (2 * (os.cpu_count() or 1)))

# one structure for every process below (the persistent compilation cache makes the later
# ones start fast); records every 1000 steps
LONG = f"""
d = 100
seeds = 8
[target]
link = "h3"
[student]
activation = "h3"
[train]
lr = 0.001
steps = {STEPS}
record_every = 1000
spherical = true
init = 0.1
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("sig") / "long.toml"
    f.write_text(LONG)
    return f


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "100"}


def _cmd() -> list[str]:
    return [str(EXE)] if EXE.exists() else [sys.executable, "-c", "from sgdlab.cli import app; app()"]


def _wait_line(stream, predicate, timeout: float = 240.0) -> str:
    """Read lines of ``stream`` until one satisfies ``predicate`` (in a thread: a deadline)."""
    found: list[str] = []

    def reader() -> None:
        for line in stream:
            if predicate(line):
                found.append(line)
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    assert found, "the process never reached the expected point"
    return found[0]


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler (Linux: the SigCgt mask of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def _stop(proc: subprocess.Popen, sig: int) -> str:
    """Send ``sig``; assert the process ends within seconds with status 128 + sig and one line
    on stderr saying so; return that line."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    proc.wait(timeout=180)
    took = time.monotonic() - t0
    err = proc.stderr.read()
    assert proc.returncode == 128 + sig, err
    assert took < MAX_STOP_S, took
    assert "Traceback" not in err and "Segmentation" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and not ln.endswith(f" of {STEPS} steps")]
    assert len(lines) == 1 and lines[0].startswith(f"interrupted by {signal.Signals(sig).name}: "), err
    return lines[0]


def _check_partial(out: Path, sig_name: str, last_line: str) -> int:
    summary = json.loads((out / "summary.json").read_text())
    assert summary["partial"] is True and summary["info"]["interrupted"] == sig_name
    assert summary["steps_requested"] == STEPS and 0 < summary["steps"] < STEPS
    steps = np.unique(pq.read_table(out / "trajectory.parquet").column("step").to_numpy())
    assert steps[-1] == summary["steps"] and len(steps) == summary["n_records"]
    assert last_line == (f"interrupted by {sig_name}: partial trajectory ({summary['steps']} of {STEPS} steps) "
                         f"written to {out}")
    # nothing half-written beside it
    assert sorted(p.name for p in out.iterdir()) == ["summary.json", "trajectory.parquet"]
    assert [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")] == []
    return summary["steps"]


def test_run_without_terminal_stops_and_keeps_the_steps_done(config, tmp_path):
    """SIGTERM (what a batch scheduler sends) to a run without a terminal: the whole run used
    to be one compiled call that no signal could stop in time. Planted bugs caught: the
    driver not looking at the flag between chunks (the watchdog then ends the process after
    4 s with nothing written), no handler (SIGTERM's bare kill, no partial output), a
    partial run written without its mark."""
    out = tmp_path / "run"
    proc = subprocess.Popen([*_cmd(), "run", str(config), "--out", str(out), "--progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    _wait_line(proc.stderr, lambda s: " of 100000000 steps" in s)  # the chunk loop has started
    time.sleep(1.0)
    _check_partial(out, "SIGTERM", _stop(proc, signal.SIGTERM))


def test_run_on_a_terminal_stops_and_keeps_the_steps_done(config, tmp_path):
    """On a terminal (progress bar) Ctrl-C used to end the process without a word and without
    the steps done. Planted bug caught: the bar's chunked path not checking the flag."""
    out = tmp_path / "tty"
    master, slave = pty.openpty()
    proc = subprocess.Popen([*_cmd(), "run", str(config), "--out", str(out)], stdin=slave, stdout=slave,
                            stderr=slave, env={**_env(), "TERM": "xterm"}, close_fds=True)
    os.close(slave)
    buf = b""
    deadline = time.monotonic() + 240
    while b"steps, ETA" not in buf and time.monotonic() < deadline:  # the bar is drawn: chunks are running
        r, _, _ = select.select([master], [], [], 1.0)
        if r:
            buf += os.read(master, 65536)
    assert b"steps, ETA" in buf, buf[-500:]
    time.sleep(1.0)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    while proc.poll() is None and time.monotonic() - t0 < 180:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                buf += os.read(master, 65536)
            except OSError:
                break
    proc.wait(timeout=180)
    took = time.monotonic() - t0
    try:
        while True:
            chunk = os.read(master, 65536)
            if not chunk:
                break
            buf += chunk
    except OSError:
        pass
    os.close(master)
    text = buf.decode(errors="replace").replace("\r", "\n")
    assert proc.returncode == 130, text[-2000:]
    assert took < MAX_STOP_S, took
    last = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("interrupted by")]
    assert len(last) == 1, text[-2000:]
    _check_partial(out, "SIGINT", last[0])


def test_signal_during_start_up_ends_in_seconds_with_nothing_half_written(config, tmp_path):
    """A SIGTERM while the process imports and compiles (no chunk has run): it ends within
    seconds (the watchdog, or the first checkpoint), exit 143, one line. Planted bug caught:
    no handler installed (SIGTERM's default kill: return code -15, no message)."""
    out = tmp_path / "early"
    proc = subprocess.Popen([*_cmd(), "run", str(config), "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.monotonic() + 240
    while not _catches_sigterm(proc.pid) and time.monotonic() < deadline:  # the command has started
        time.sleep(0.05)
    line = _stop(proc, signal.SIGTERM)
    if out.exists():  # stopped at a checkpoint: a complete partial run, never a half-written one
        _check_partial(out, "SIGTERM", line)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_sweep_stops_and_keeps_the_store_consistent(config, tmp_path):
    """A sweep (in this process) stopped by SIGINT: exit 130, one line, and the store holds no
    row of the run it was computing. Planted bug caught: the interruption recorded as failed
    runs (``compute`` catching it like an error and the sweep loop not looking at the flag):
    2 rows, which a rerun would skip."""
    store = tmp_path / "store"
    proc = subprocess.Popen([*_cmd(), "sweep", str(config), "--grid", "train.lr=0.001,0.002", "--workers", "1",
                             "--store", str(store)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())
    _wait_line(proc.stdout, lambda s: s.startswith("sweep: 2 runs"))
    time.sleep(4.0)
    _stop(proc, signal.SIGINT)
    import sqlite3

    with sqlite3.connect(store / "index.sqlite") as con:
        assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    assert list((store / "runs").iterdir()) == []


# --------------------------------------------------------------------------------------
# the chunk loop, in this process
# --------------------------------------------------------------------------------------

PB, ST = Problem(d=40, link="h3"), Student(activation="h3")
TR = Training(lr=0.02, batch=3, steps=203, record_every=4, spherical=True, init=0.3)


def _drive(**kw):
    model = _model(PB, ST, TR)
    return drive(_built(Chain(), model), seed_keys(3, 5), steps=TR.steps, every=TR.record_every, threshold=0.5,
                 hyper=Chain().hyper(model), start=model.init.per_seed(model, 5), **kw)


def test_chunked_loop_is_bit_identical_whatever_the_chunk_size():
    """One record per chunk and all records in one chunk give the same bits. Planted bug
    caught: a chunk that restarts its record index or its state at the chunk boundary."""
    a, b = _drive(chunk_seconds=1e-12), _drive(chunk_seconds=1e12)
    np.testing.assert_array_equal(a.steps, np.r_[np.arange(51) * 4, 203])
    for x, y in [(a.M, b.M), (a.Q, b.Q), (a.a, b.a), (a.escape_step, b.escape_step)]:
        np.testing.assert_array_equal(x, y)


def test_flag_raises_or_returns_the_records_so_far():
    """With the flag set (as the signal handler does): a run raises Interrupted (sweeps and
    reproductions must not store it), or inside keep_partial returns the start record marked
    interrupted. Planted bug caught: the partial result returned silently as a finished run."""
    full = _drive()
    _interrupt._State.signum = signal.SIGINT
    try:
        with pytest.raises(_interrupt.Interrupted) as e:
            _drive()
        assert e.value.exit_code == 130 and "0 of 203 steps" in e.value.line()
        with _interrupt.keep_partial():
            part = _drive()
    finally:
        _interrupt._State.signum = None
    assert part.info["interrupted"] == "SIGINT" and "interrupted" not in full.info
    np.testing.assert_array_equal(part.steps, [0])
    np.testing.assert_array_equal(part.M[:, 0], full.M[:, 0])


def test_progress_reports_between_chunks_without_changing_the_run():
    """run(progress=callable) is called between the chunks with increasing step counts up to
    the horizon, and progress=True (a rich bar, off without a terminal) runs as well; both give
    the bits of the plain driver. Planted bug caught: a progress path that re-runs or skips a
    chunk (the records then differ) or never reports the last step."""
    from sgdlab import run

    calls: list[int] = []
    res = run(PB, ST, TR, engine=Chain(), seeds=5, seed=3, progress=calls.append)
    bar = run(PB, ST, TR, engine=Chain(), seeds=5, seed=3, progress=True)
    ref = _drive(chunk_seconds=1e12)
    assert calls == sorted(calls) and calls[-1] == TR.steps and len(calls) >= 2
    np.testing.assert_array_equal(res.M, ref.M)
    np.testing.assert_array_equal(bar.M, ref.M)
