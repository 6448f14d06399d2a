"""The ``sgdlab`` command line: ``run``, ``plot``, ``sweep``, ``results``, ``info`` and ``demo``.

- ``sgdlab run CONFIG.toml [--engine full|chain|ode] [--seeds N] [--out DIR] [--set key=value ...]``
  runs one configuration and writes ``DIR/trajectory.parquet`` and ``DIR/summary.json``.
- ``sgdlab plot DIR [DIR ...] [--out FILE.png]`` overlays run folders;
  ``sgdlab plot --store STORE [--where key=value ...]`` overlays the matching runs of a store.
- ``sgdlab sweep CONFIG.toml --grid key=v1,v2 [--grid ...] [--store DIR] [--workers N | --dask ADDRESS]``
  runs the cartesian product of the grids into a results store (see :mod:`sgdlab.store`),
  computing only the runs not yet there.
- ``sgdlab results [--store DIR] [--where key=value ...]`` lists the runs of a store.
- ``sgdlab info LINK [--student ACT] [--K 8]`` prints Hermite coefficients and the
  information exponent.
- ``sgdlab demo [--out results/demo]``: a single-index h3 target learnt by spherical SGD on
  all three engines, with a figure and a table.
- ``sgdlab reproduce NAME [--quick] [--engine chain|full] [--store DIR] [--out DIR] [--link NAME]``: a system
  of the literature (``info-exponent``, ``smoothing``, ``batch-size``, ``ssi``, ``fourier``) with figures, a
  table and a JSON of fitted numbers (:mod:`sgdlab.reproduce`).

Invalid input (configuration, overrides, options) is reported as one line
``error: field: got VALUE; allowed: WHAT`` on stderr with exit status 2.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer import _click
from typer.core import TyperGroup

from ._errors import did_you_mean
from .config import ConfigError, build, load_config, make_engine, validate_config

__all__ = ["app", "DEMO_CONFIG", "DEMO_SEEDS"]


class _OneLineErrors(TyperGroup):
    """Report usage errors and :class:`ConfigError` as one ``error:`` line, exit status 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        from . import _interrupt
        from ._cache import enable_compilation_cache

        enable_compilation_cache()
        try:
            with _interrupt.handling():
                rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
                signum = _interrupt.requested()
                if signum is not None:  # arrived after the last checkpoint: the work is complete
                    raise _interrupt.Interrupted(signum, "the command had finished; its output is complete")
        except _interrupt.Interrupted as e:
            print(e.line(), file=sys.stderr)
            sys.exit(e.exit_code)
        except typer.Exit as e:
            sys.exit(e.exit_code)
        except _click.exceptions.ClickException as e:
            _fail(_usage_message(e), e.exit_code if e.exit_code else 2)
        except ConfigError as e:
            _fail(str(e), 2)
        except (KeyboardInterrupt, EOFError):
            print("error: aborted", file=sys.stderr)
            sys.exit(130)
        except BrokenPipeError:  # output piped into e.g. `head`
            sys.stderr.close()
            sys.exit(0)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


#: Phrases of the library's messages that name what only Python can pass (a function, an
#: engine object): the command line cannot give them, so its messages leave them out.
_PYTHON_ONLY = (", or a JAX function", " or a JAX function", ", Full(), Chain() or ODE()",
                ", Full(), Chain(), ODE() or SDE()")


def _fail(message: str, code: int = 2) -> None:
    """Print every line of ``message`` (one per configuration error) as ``error: ...``; exit."""
    for line in str(message).splitlines() or [""]:
        for phrase in _PYTHON_ONLY:
            line = line.replace(phrase, "")
        if line.strip():
            print("error: " + " ".join(line.split()), file=sys.stderr)
    sys.exit(code)


def _usage_message(e: Exception) -> str:
    param = getattr(e, "param", None)
    msg = e.format_message() if hasattr(e, "format_message") else str(e)
    if param is not None:
        name = (getattr(param, "opts", None) or [param.name])[0]
        if isinstance(e, _click.exceptions.MissingParameter):
            what = (getattr(param, "help", None) or "a value").rstrip(".")
            if not what[1:2].isupper():
                what = what[:1].lower() + what[1:]
            return f"{name}: got nothing; allowed: {what}"
        return f"{name}: {getattr(e, 'message', msg)}"
    return f"usage: {msg}"


def _user_config(cfg):
    """Checks of a configuration given on the command line beyond the library's: an escape
    threshold above 1 is accepted by the library (its reproductions use 2 to switch the escape
    statistic off) but is a mistake from a user, since no normalised overlap exceeds 1."""
    t = cfg.train.escape_threshold
    if t > 1:
        raise ConfigError(f"train.escape_threshold: got {t!r}; allowed: a number in (0, 1] (a normalised "
                          "overlap, which never exceeds 1)")
    return cfg


def _int_option(name: str, text: str | None, allowed: str) -> int | None:
    """Integer options are read here so that a bad value is reported with the value itself."""
    if text is None:
        return None
    try:
        return int(text, 10)
    except ValueError:
        raise ConfigError(f"{name}: got {text!r}; allowed: {allowed}") from None


app = typer.Typer(
    cls=_OneLineErrors,
    help="Online SGD in high dimension: full simulation, exact Gram-matrix chain and ODE limit. "
    "Documentation: the sgdlab site (make docs builds it from docs/).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=True,
)

EngineOption = Annotated[
    str | None,
    typer.Option("--engine", help="full, chain, ode or sde (overrides the config).",
                 autocompletion=lambda: ["full", "chain", "ode", "sde"]),
]
INT = "<int>"  # metavar of the integer options (read as text so that a bad value is quoted back)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"sgdlab {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Online SGD in high dimension: full simulation, exact Gram-matrix chain and ODE limit."""


def _stdout(markup: bool = True) -> Console:
    """Standard output at the terminal's width (80 columns into a pipe or file, or $COLUMNS);
    tables are fitted to it (:func:`_fitted_table`), lines of text are not wrapped."""
    return Console(file=sys.stdout, highlight=False, markup=markup, soft_wrap=True)


# --------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------


def _median_cell(median: float | None, horizon: int | None) -> str:
    """A Kaplan-Meier median escape step: the number, or ``> horizon`` when fewer than half of
    the seeds escaped by the last step run (the median is then only bounded below)."""
    if median is not None and math.isfinite(median):
        return f"{median:.0f}"
    return "-" if horizon is None else f"> {horizon}"


def _summary_median(summary: dict) -> str:
    from .store import km_median_escape

    horizon = int(summary.get("steps") or 0)
    return _median_cell(km_median_escape(summary["escape_step"], horizon, summary.get("diverged")), horizon)


def _fmt(x: Any, spec: str = "") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, spec)


def _fitted_table(title: str, columns: list[tuple[str, int, list[str], str]], width: int) -> tuple[Table, list[str]]:
    """A table of the ``columns`` (header, importance: lower is kept first, cells, justify)
    that fits in ``width`` terminal columns: the least important columns are left out (in
    their original order otherwise); returns the table and the headers left out."""
    need = [max(len(h), *(len(c) for c in cells)) + 3 for h, _, cells, _ in columns]  # padding and rule
    order = sorted(range(len(columns)), key=lambda i: columns[i][1])
    kept, used = set(), 1
    for i in order:
        if used + need[i] <= width or not kept:
            kept.add(i)
            used += need[i]
    table = Table(title=title, show_header=True, header_style="bold", title_justify="left")
    for i, (h, _, _, justify) in enumerate(columns):
        if i in kept:
            table.add_column(escape(h), justify=justify, no_wrap=True)
    n_rows = len(columns[0][2]) if columns else 0
    for r in range(n_rows):
        table.add_row(*(escape(columns[i][2][r]) for i in range(len(columns)) if i in kept))
    return table, [columns[i][0] for i in range(len(columns)) if i not in kept]


def _print_table(con: Console, title: str, columns: list[tuple[str, int, list[str], str]], hint: str = "") -> None:
    table, hidden = _fitted_table(title, columns, con.width)
    con.print(table)
    if hidden:
        con.print(f"({len(hidden)} column{'s' if len(hidden) > 1 else ''} left out at {con.width} columns: "
                  f"{', '.join(hidden)}{hint})", markup=False, soft_wrap=False)


def _run_dir_key(cfg) -> str:
    from .store import run_key

    return run_key(cfg)[:10]


def default_out(config: Path, cfg) -> Path:
    """``results/<config stem>-<engine>-<key>``: the key is the start of the store key of the
    resolved configuration, so runs with different settings never share a folder."""
    return Path("results") / f"{config.stem}-{cfg.engine}-{_run_dir_key(cfg)}"


#: The files of a run folder: replaced together (a figure of an earlier run never stays beside new data)
RUN_FILES = ("trajectory.parquet", "summary.json", "figure.png")


def _check_out(out_dir: Path, cfg, force: bool) -> None:
    """Refuse an ``--out`` that is a file, or a non-empty folder that holds something else than
    a run of the same configuration (unless ``force``)."""
    import json

    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out: got {str(out_dir)!r}, an existing file; allowed: a folder (new, empty, "
                          "or holding a run of the same configuration)")
    if not out_dir.is_dir() or not any(out_dir.iterdir()) or force:
        return
    try:
        same = json.loads((out_dir / "summary.json").read_text()).get("config") == cfg.to_dict()
    except (OSError, ValueError):
        same = False
    if not same:
        raise ConfigError(f"--out: got {str(out_dir)!r}, a non-empty folder that does not hold a run of this "
                          "configuration; allowed: a new or empty folder, or --force to replace its run files "
                          f"({', '.join(RUN_FILES)})")


def write_run_folder(result, config: dict, out_dir: Path, **extra: Any) -> None:
    """Write the run into a temporary folder beside ``out_dir``, then put it in place: the
    folder never holds a mix of two runs (the files of :data:`RUN_FILES` are replaced together,
    others are left alone) nor a half-written file."""
    import os
    import shutil
    import tempfile

    from .io import write_run

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        write_run(result, config, tmp, **extra)
        if not out_dir.exists():
            os.rename(tmp, out_dir)
            return
        for name in RUN_FILES:
            (out_dir / name).unlink(missing_ok=True)
        for f in tmp.iterdir():
            os.replace(f, out_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def execute(cfg, out_dir: Path, *, engine: Any = None, progress: bool = True, log: bool = False,
            **extra: Any) -> dict:
    """Run a validated configuration, write its folder and return the summary. Interrupted
    by SIGINT/SIGTERM, the steps run so far are written, marked ``"partial": true``."""
    from . import _interrupt
    from . import run as run_sgd
    from ._progress import ProgressBar
    from .io import summarise

    built = build(cfg, engine=engine is None)
    eng = built.engine if engine is None else engine
    bar = ProgressBar(built.training.steps, f"{cfg.engine} d={cfg.d}", log=log) if progress else None
    try:
        with _interrupt.keep_partial():
            result = run_sgd(
                built.problem, built.student, built.training, engine=eng, seeds=cfg.seeds, seed=cfg.seed,
                progress=bar if bar is not None and (bar.enabled or bar.log) else None,
            )
    finally:
        if bar is not None:
            bar.close()
    if result.info.get("interrupted"):
        extra = {**extra, "partial": True, "steps_requested": built.training.steps}
    write_run_folder(result, cfg.to_dict(), out_dir, **extra)
    return summarise(result, cfg.to_dict(), out=str(out_dir), **extra)


def _run_columns(summary: dict) -> list[tuple[str, int, list[str], str]]:
    n = summary["n_seeds"]
    return [
        ("engine", 0, [summary["engine"]], "left"),
        ("d", 1, [str(summary["d"])], "right"),
        ("seeds", 2, [str(n)], "right"),
        ("steps", 5, [str(summary["steps"])], "right"),
        ("escaped", 0, [f"{summary['n_escaped'] / n:.0%}"], "right"),
        ("median escape step", 0, [_summary_median(summary)], "right"),
        ("diverged", 1, [str(summary["n_diverged"])], "right"),
        ("wall time", 3, [f"{summary['wall_time']:.1f} s"], "right"),
    ]


def _dry_run(con: Console, configs: list, out: str | None = None, store: Path | None = None) -> None:
    """What a command would run: resolved configuration(s), run keys, runs, seed-steps."""
    import json

    from .store import Store, run_key

    keys = [run_key(c) for c in configs]
    cached: set[str] = set()
    if store is not None and (store / "index.sqlite").is_file():
        with Store(store, readonly=True) as st:
            cached = {k for k, v in st.status(keys).items() if v in ("done", "diverged")}
    if len(configs) == 1:
        con.print(json.dumps(configs[0].to_dict(), indent=2), markup=False, highlight=False)
    seed_steps = sum(c.seeds * c.train.steps for c in configs if c.engine != "ode")
    n_ode = sum(c.engine == "ode" for c in configs)
    for c, k in zip(configs[:50], keys[:50], strict=False):
        con.print(f"run {k[:10]}  {c.engine:5s} d={c.d} seeds={c.seeds} steps={c.train.steps}"
                  + ("  (in the store)" if k in cached else ""), markup=False, highlight=False)
    if len(configs) > 50:
        con.print(f"... {len(configs) - 50} more runs", markup=False)
    todo = len(configs) - len(cached)
    con.print(f"dry run: {len(configs)} run{'s' if len(configs) != 1 else ''}, {len(cached)} in the store, "
              f"{todo} to compute; {seed_steps:.3g} seed-steps in all"
              + (f" ({n_ode} ODE run{'s' if n_ode != 1 else ''}: deterministic, no seed-steps)" if n_ode else "")
              + (f"; output {out}" if out else ""), markup=False, highlight=False)


@app.command("run")
def run_command(
    config: Annotated[Path, typer.Argument(help="A TOML configuration file.", show_default=False)],
    engine: EngineOption = None,
    seeds: Annotated[
        str | None, typer.Option("--seeds", metavar=INT, help="Number of seeds (overrides the config).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output folder (default: results/<config>-<engine>-<key of the settings>)."),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: dotted.key=value (TOML value); repeatable.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the run files of a non-empty --out folder.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the resolved configuration, run key and cost; run nothing.")
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress", help="Without a terminal, print the steps done every 30 s (batch logs).")
    ] = False,
) -> None:
    """Run one configuration; write trajectory.parquet and summary.json.

    Ctrl-C (SIGINT) or SIGTERM stops the run within seconds and writes the steps run so far,
    marked as partial in summary.json (exit status 130 or 143)."""
    from . import _interrupt

    n_seeds = _int_option("--seeds", seeds, "a positive integer")
    cfg = _user_config(load_config(config, set_ or (), engine=engine, seeds=n_seeds))
    out_dir = out if out is not None else default_out(config, cfg)
    con = _stdout()
    if dry_run:
        _dry_run(con, [cfg], out=str(out_dir))
        return
    _check_out(out_dir, cfg, force)
    summary = execute(cfg, out_dir, log=progress, config_file=str(config))
    _print_table(con, "sgdlab run", _run_columns(summary))
    signum = _interrupt.requested()
    if summary.get("partial"):
        raise _interrupt.Interrupted(signum or signal.SIGINT, f"partial trajectory ({summary['steps']} of "
                                     f"{summary['steps_requested']} steps) written to {out_dir}")
    con.print(f"wrote {out_dir}", markup=False, highlight=False)


# --------------------------------------------------------------------------------------
# plot
# --------------------------------------------------------------------------------------


@app.command("plot")
def plot_command(
    dirs: Annotated[
        list[Path] | None, typer.Argument(help="Run folders written by 'sgdlab run'.", show_default=False)
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Figure file: .png, .pdf or .svg (default: <first folder>/figure.png)."),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option("--store", help="Overlay the runs of a results store instead (default figure: STORE/figure.png)."),
    ] = None,
    where: Annotated[
        list[str] | None, typer.Option("--where", help="With --store: column=value (also != < <= > >=); repeatable.")
    ] = None,
    style: Annotated[
        str, typer.Option("--style", help="default, or paper (one column wide, serif, 300 dpi).")
    ] = "default",
) -> None:
    """Overlay runs: normalised overlap and risk against t = samples / d, each run labelled by
    the settings that differ between them."""
    from .plot import plot_runs

    try:
        if store is not None or where:
            if dirs:
                raise ConfigError("plot: got run folders and --store/--where; allowed: either folders or a store query")
            from .sweep import plot_query

            path, n = plot_query(store if store is not None else Path("results"), where or (), out, style=style)
            _stdout().print(f"wrote {path} ({n} run{'s' if n != 1 else ''})", markup=False)
            return
        if not dirs:
            raise ConfigError(
                "DIRS: got nothing; allowed: run folders written by 'sgdlab run', or --store DIR [--where ...]"
            )
        path = plot_runs(dirs, out, style=style)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(str(e)) from None
    _stdout().print(f"wrote {path}", markup=False)


# --------------------------------------------------------------------------------------
# sweep and results
# --------------------------------------------------------------------------------------


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if not math.isfinite(v) else f"{v:.4g}"
    return str(v)


def _runs_columns(rows: list[dict], *, cached: bool = False) -> list[tuple[str, int, list[str], str]]:
    """Columns of a runs table, each with its importance (lower: kept first when the width is
    short): status, the configuration fields that differ between the runs (engine and d
    otherwise), escape fraction and Kaplan-Meier median escape step, seeds, key, wall time,
    error, cached, creation time."""
    from .sweep import varying_columns

    vary = varying_columns(rows)
    shown = [c for c in ("engine", "d") if c not in vary] + vary

    def col(header: str, importance: int, cells: list[str], justify: str = "left"):
        return (header, importance, cells, justify)

    out = [col("key", 4, [r["key"][:10] for r in rows]), col("status", 0, [r["status"] for r in rows])]
    out += [col(c, 1 + (c in ("engine", "d")), [_cell(r.get(c)) for r in rows]) for c in shown]
    out += [
        col("seeds", 3, [_cell(r.get("n_seeds")) for r in rows], "right"),
        col("escaped", 0, ["-" if r.get("frac_escaped") is None else f"{r['frac_escaped']:.0%}" for r in rows],
            "right"),
        col("median escape", 0, [_median_cell(r.get("median_escape_step"), r.get("horizon")) if r.get("n_seeds")
                                 else "-" for r in rows], "right"),
        col("wall [s]", 5, ["-" if r.get("wall_time") is None else f"{r['wall_time']:.1f}" for r in rows], "right"),
    ]
    if cached:
        out.append(col("cached", 6, ["yes" if r.get("cached") else "" for r in rows]))
    out.append(col("created (UTC)", 7, [(r.get("created_at") or "")[:16].replace("T", " ") or "-" for r in rows]))
    if any(r.get("error") for r in rows):
        out.append(col("error", 5, [_cell(r.get("error"))[:60] for r in rows]))
    return out


def _rows_csv(rows: list[dict]) -> str:
    import csv
    import io

    names = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def _rows_json(rows: list[dict]) -> str:
    import json

    from .io import _jsonable

    return json.dumps(_jsonable(rows), indent=2) + "\n"


@app.command("sweep")
def sweep_command(
    config: Annotated[Path, typer.Argument(help="A TOML configuration file (the base).", show_default=False)],
    grid: Annotated[
        list[str] | None,
        typer.Option("--grid", help="dotted.key=v1,v2,...: one axis of the grid; repeatable (cartesian product)."),
    ] = None,
    engine: EngineOption = None,
    seeds: Annotated[
        str | None, typer.Option("--seeds", metavar=INT, help="Number of seeds (overrides the config).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a base key: dotted.key=value; repeatable.")
    ] = None,
    store: Annotated[Path, typer.Option("--store", help="Results store folder.")] = Path("results"),
    workers: Annotated[
        str | None, typer.Option("--workers", metavar=INT, help="Local worker processes (default: one per core).")
    ] = None,
    dask: Annotated[
        str | None, typer.Option("--dask", help="Send the runs to a dask scheduler, e.g. tcp://host:8786.")
    ] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run failed runs again.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the runs, their keys and cost; run nothing.")
    ] = False,
) -> None:
    """Run the cartesian product of the grids over a base config; runs already in the store are reused.

    Ctrl-C (SIGINT) or SIGTERM stops the sweep within seconds: finished runs stay in the
    store, the running ones are dropped, and the same command resumes it."""
    from .sweep import default_workers, expand_grid, parse_grid, run_sweep

    n_seeds = _int_option("--seeds", seeds, "a positive integer")
    n_workers = _int_option("--workers", workers, "a positive integer")
    if n_workers is not None and n_workers < 1:
        raise ConfigError(f"--workers: got {workers!r}; allowed: a positive integer")
    if dask is not None and n_workers is not None:
        raise ConfigError("--workers: got a value together with --dask; allowed: one of --workers, --dask")
    if n_workers is None and dask is None:
        default_workers()  # a bad SGDLAB_WORKERS is reported before anything starts
    axes = parse_grid(grid or ())
    base = load_config(config, set_ or (), engine=engine, seeds=n_seeds).to_dict()
    con = _stdout()
    configs = [_user_config(c) for c in expand_grid(base, axes)]
    if dry_run:
        _dry_run(con, configs, store=store)
        return

    def started(rep) -> None:
        todo = rep.total - rep.cached
        n = min(n_workers or default_workers(), max(todo, 1))
        where = f"dask scheduler {dask}" if dask else ("in this process" if n == 1 else f"{n} worker processes")
        con.print(f"sweep: {rep.total} runs, {rep.cached} cached, {todo} to compute ({where}); store {rep.store}")

    rep = run_sweep(
        base,
        axes,
        store=store,
        workers=n_workers,
        dask=dask,
        retry_failed=retry_failed,
        progress=True,
        on_start=started,
    )
    rows = rep.table.to_pylist()
    _print_table(con, f"sgdlab sweep: {store}", _runs_columns(rows[:50], cached=True),
                 f"; all of them: sgdlab results --store {store} --format csv")
    if len(rows) > 50:
        con.print(f"... {len(rows) - 50} more: sgdlab results --store {store}")
    con.print(
        f"{rep.total} runs: {rep.cached} cached, {rep.computed} computed; "
        f"{rep.failed} failed, {rep.diverged} diverged ({rep.wall_time:.1f} s)"
    )
    if rep.failed:
        con.print("[yellow]note[/]: failed runs are kept with their error; run them again with --retry-failed")


@app.command("results")
def results_command(
    store: Annotated[Path, typer.Option("--store", help="Results store folder.")] = Path("results"),
    where: Annotated[
        list[str] | None, typer.Option("--where", help="column=value (also != < <= > >=); repeatable.")
    ] = None,
    format_: Annotated[
        str, typer.Option("--format", help="table (fitted to the terminal), csv or json (every column).")
    ] = "table",
) -> None:
    """List the runs of a results store."""
    from .store import Store

    if format_ not in ("table", "csv", "json"):
        raise ConfigError(f"--format: got {format_!r}; allowed: table, csv or json"
                          + did_you_mean(format_, ("table", "csv", "json")))
    with Store(store, readonly=True) as st:
        rows = st.query(where or ())
    if format_ != "table":
        sys.stdout.write(_rows_csv(rows) if format_ == "csv" else _rows_json(rows))
        return
    con = _stdout()
    cond = f" where {' and '.join(where)}" if where else ""
    if not rows:
        con.print(f"no runs in {store}{cond}", markup=False)
        return
    _print_table(con, f"{len(rows)} run{'s' if len(rows) != 1 else ''} in {store}{cond}", _runs_columns(rows),
                 "; all of them: --format csv")


# --------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------


def _parse_link(text: str, field: str) -> Any:
    """A link name, or a comma-separated list of orthonormal Hermite coefficients."""
    from ._functions import resolve_fn

    spec: Any = text.strip()
    if "," in spec or _is_number(spec):
        try:
            spec = [float(v) for v in spec.strip("[]").split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"{field}: got {text!r}; allowed: a link name or comma-separated numbers") from None
    try:
        resolve_fn(spec, field=field)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return spec


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


@app.command("info")
def info_command(
    link: Annotated[str, typer.Argument(help="Link name (h3, He3, relu, ...) or comma list c0,c1,...")],
    student: Annotated[str | None, typer.Option("--student", help="Student activation.")] = None,
    K: Annotated[str, typer.Option("--K", metavar=INT, help="Highest Hermite degree.")] = "8",
) -> None:
    """Orthonormal Hermite coefficients c_0..c_K and the information exponent."""
    from ._functions import hermite_coefficients, information_exponent

    k = _int_option("--K", K, "an integer in 1..64")
    if k is None or k < 1 or k > 64:
        raise ConfigError(f"--K: got {K!r}; allowed: an integer in 1..64")
    K = k
    target = _parse_link(link, "link")
    stu = _parse_link(student, "--student") if student is not None else None
    ct = hermite_coefficients(target, K)
    cs = hermite_coefficients(stu, K) if stu is not None else None
    con = _stdout(markup=False)
    con.print(f"link {link}: orthonormal Hermite coefficients c_j = E[f(Z) h_j(Z)], h_j = He_j / sqrt(j!)")
    for j in range(K + 1):
        line = f"  c_{j} = {ct[j]: .6f}"
        if cs is not None:
            line += f"    student c_{j} = {cs[j]: .6f}"
        con.print(line)
    ie = information_exponent(target, stu, K)
    who = f" (with student {student})" if student is not None else ""
    con.print(f"information exponent{who}: {ie if ie is not None else f'none up to K = {K}'}")


# --------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------

#: The demo problem (also in ``examples/h3_spherical.toml``): y = h3(w* . x), student h3,
#: p = 1, spherical SGD with batch 128 from a warm start m0 = 0.2 in d = 200. At this step
#: size the finite-d noise balances the drift 3 lr m^2 near m ~ 0.05, so the overlap
#: first wanders near its start (search) and then rises quickly to 1 (descent).
DEMO_CONFIG: dict[str, Any] = {
    "d": 200,
    "seeds": 64,
    "seed": 0,
    "engine": "chain",
    "target": {"link": "h3"},
    "student": {"width": 1, "activation": "h3"},
    "train": {
        "loss": "square",
        "lr": 0.004,
        "batch": 128,
        "steps": 800,
        "spherical": True,
        "init": 0.2,
        "record_every": 8,
        "escape_threshold": 0.5,
    },
    "full": {"dtype": "float32"},
}
DEMO_SEEDS = {"chain": 64, "full": 32, "ode": 1}


def _engine_available(name: str, cfg) -> tuple[Any, str | None]:
    try:
        eng = make_engine(cfg, name)
    except (ConfigError, NotImplementedError, AttributeError, TypeError) as e:
        return None, str(e)
    if not (hasattr(eng, "build") or hasattr(eng, "solve")):
        return None, f"the {name} engine is not available in this installation"
    return eng, None


def _demo_row(summary: dict) -> dict[str, str]:
    n = summary["n_seeds"]
    fo = [v for v in summary["final_overlap"] if v is not None]
    return {
        "engine": summary["engine"],
        "seeds": str(n),
        "wall time [s]": f"{summary['wall_time']:.1f}",
        "median escape step": _summary_median(summary),
        "fraction escaped": f"{summary['n_escaped'] / n:.2f}",
        "final mean overlap": f"{np.mean(fo):.3f}" if fo else "-",
    }


def _markdown(rows: list[dict[str, str]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
    lines += ["| " + " | ".join(r[k] for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("results/demo"),
    engines: Annotated[
        str, typer.Option("--engines", help="Comma list of engines to run.", show_default=True)
    ] = "chain,full,ode",
) -> None:
    """h3 single-index target, spherical SGD, student h3: chain, full and ODE overlaid."""
    from .io import _atomic_write
    from .plot import plot_runs

    names = [e.strip() for e in engines.split(",") if e.strip()]
    for name in names:
        if name not in ("full", "chain", "ode"):
            raise ConfigError(f"--engines: got {name!r}; allowed: a comma list of full, chain, ode")
    con = _stdout()
    t0 = time.perf_counter()
    rows, dirs = [], []
    for name in names:
        data = {**DEMO_CONFIG, "engine": name, "seeds": DEMO_SEEDS[name]}
        cfg = validate_config(data)
        eng, why = _engine_available(name, cfg)
        if eng is None:
            con.print(f"[yellow]note[/]: skipping the {name} engine ({why})")
            continue
        run_dir = out / name
        try:
            summary = execute(cfg, run_dir, engine=eng, progress=False, demo=True)
        except (NotImplementedError, AttributeError) as e:
            con.print(f"[yellow]note[/]: skipping the {name} engine ({type(e).__name__}: {e})")
            continue
        if summary.get("partial"):
            from ._interrupt import Interrupted, requested

            raise Interrupted(requested() or signal.SIGINT, f"demo stopped in the {name} engine; partial "
                              f"trajectory ({summary['steps']} of {summary['steps_requested']} steps) in {run_dir}")
        rows.append(_demo_row(summary))
        dirs.append(run_dir)
        con.print(f"{name}: {summary['n_seeds']} seed(s) in {summary['wall_time']:.1f} s -> {run_dir}")
    if not rows:
        raise ConfigError(f"--engines: got {engines!r}; allowed: at least one available engine")
    fig = plot_runs(dirs, out / "figure.png", title="h3 target, spherical SGD, student h3 (p = 1)")
    md = _markdown(rows)
    _atomic_write(out / "table.md", lambda p: Path(p).write_text(md))
    table = Table(title=f"sgdlab demo: d = {DEMO_CONFIG['d']}, total {time.perf_counter() - t0:.1f} s")
    for k in rows[0]:
        table.add_column(k)
    for r in rows:
        table.add_row(*r.values())
    con.print(table)
    con.print(f"wrote {fig} and {out / 'table.md'}")


def _reproduction_names() -> list[str]:
    from .reproduce import REPRODUCTIONS

    return list(REPRODUCTIONS)


def _reproductions_table(con: Console) -> None:
    from .reproduce import MEASURED, REPRODUCTIONS, about

    names = list(REPRODUCTIONS)
    cost = [MEASURED.get(n, {}) for n in names]
    _print_table(con, "sgdlab reproduce NAME [--quick]", [
        ("name", 0, names, "left"),
        ("quick", 1, [c.get("quick", "not measured") for c in cost], "left"),
        ("full", 1, [c.get("full", "not measured") for c in cost], "left"),
    ])
    for n in names:
        con.print(f"{n}: {about(n)}", markup=False, highlight=False)
    con.print("times: wall time on 2 CPU cores with an empty store; --dry-run NAME lists the runs "
              "and seed-steps", markup=False)


def _links(name: str, links: str) -> list[str]:
    from ._functions import LINK_NAMES, information_exponent

    if name != "info-exponent":
        raise ConfigError(f"--links: got {links!r}; allowed: only with info-exponent")
    out = [x.strip() for x in links.split(",") if x.strip()]
    if not out:
        raise ConfigError(f"--links: got {links!r}; allowed: a comma list of link names, e.g. h2,h3,relu")
    for link in out:
        if link not in LINK_NAMES:
            raise ConfigError(f"--links: got {link!r}{did_you_mean(link, LINK_NAMES)}; allowed: "
                              f"{', '.join(LINK_NAMES)}")
        if information_exponent(link, None, 8) is None:
            raise ConfigError(f"--links: got {link!r}, which has no information exponent up to 8; allowed: a link "
                              "with one (see sgdlab info LINK)")
    return out


@app.command("reproduce")
def reproduce_command(
    name: Annotated[
        str | None,
        typer.Argument(help="A reproduction (sgdlab reproduce --list).", show_default=False,
                       autocompletion=_reproduction_names),
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Small version (minutes on a laptop).")] = False,
    engine: Annotated[str | None, typer.Option("--engine", help="chain or full (default: chain; fourier: full).",
                                               show_default=False)] = None,
    store: Annotated[Path, typer.Option("--store", help="Results store folder (runs are cached there).")] = Path(
        "results/store"
    ),
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default: results/reproduce/NAME or NAME-quick).")
    ] = None,
    seeds: Annotated[
        str | None, typer.Option("--seeds", metavar=INT, help="Seeds per point (overrides the default).")
    ] = None,
    links: Annotated[
        str | None, typer.Option("--links", help="Comma list of links (info-exponent), e.g. h2,h3,relu.")
    ] = None,
    link: Annotated[
        str | None, typer.Option("--link", help="Target and student link (pretraining; default He3), a named link "
                                 "with information exponent >= 2, e.g. He2, He4.", show_default=False)
    ] = None,
    parts: Annotated[
        str | None, typer.Option("--parts", help="Comma list of parts to run (info-exponent: series, batch, "
                                 "trajectory, sde); the others come from --base.")
    ] = None,
    base: Annotated[
        Path | None, typer.Option("--base", help="results.json of an earlier run supplying the parts not run "
                                  "(info-exponent).")
    ] = None,
    workers: Annotated[
        str | None, typer.Option("--workers", metavar=INT, help="Local worker processes (default: one per CPU core).")
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the reproductions with their cost and exit.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the runs, their keys and cost; run nothing.")
    ] = False,
) -> None:
    """Reproduce a system of the literature: figures, table.md and results.json with fitted numbers.

    Ctrl-C (SIGINT) or SIGTERM stops it within seconds; the finished runs stay in the store
    and the same command resumes."""
    from .reproduce import REPRODUCTIONS, get, plan_points

    con = _stdout()
    if list_:
        _reproductions_table(con)
        return
    if name is None:
        raise ConfigError(f"NAME: got nothing; allowed: {', '.join(REPRODUCTIONS)} (or --list)")
    fn = get(name)
    n_seeds = _int_option("--seeds", seeds, "a positive integer")
    n_workers = _int_option("--workers", workers, "a positive integer")
    opts: dict[str, Any] = dict(quick=quick, store=store, out=out, seeds=n_seeds, workers=n_workers,
                                progress=sys.stderr.isatty())
    if engine is not None:  # else each reproduction's own default
        opts["engine"] = engine
    if links is not None:
        opts["links"] = _links(name, links)
    if link is not None:
        if name != "pretraining":
            raise ConfigError(f"--link: got {link!r} for {name!r}; allowed: only with pretraining")
        from .reproduce.pretraining import check_link

        opts["link"] = check_link(link, "--link")[0]
    if parts is not None or base is not None:
        if name != "info-exponent":
            raise ConfigError(f"--parts/--base: got them for {name!r}; allowed: only with info-exponent")
        if parts is not None:
            opts["parts"] = [x.strip() for x in parts.split(",") if x.strip()]
        if base is not None:
            opts["base"] = base
    if dry_run:
        from .config import load_config as load

        plan = {k: v for k, v in opts.items() if k in ("quick", "engine", "seeds", "links", "parts")}
        pts = plan_points(name, **plan)
        if pts is None:
            raise ConfigError(f"--dry-run: got {name!r}, whose runs are not planned ahead; allowed: "
                              f"{', '.join(n for n in REPRODUCTIONS if n != name)}")
        _dry_run(con, [load(data=dict(p.config), engine=engine) for p in pts], store=store)
        return
    res = fn(**opts)
    con.print((res.out / "table.md").read_text(), markup=False)
    con.print(f"{name}: {res.summary['wall_time_s']:.1f} s on {res.summary['device']}; wrote "
              + ", ".join(str(f) for f in res.files), markup=False)


if __name__ == "__main__":  # pragma: no cover
    app()
