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
- ``sgdlab reproduce NAME [--quick] [--engine chain|full] [--store DIR] [--out DIR]``: a system
  of the literature (``info-exponent``, ``smoothing``, ``batch-size``, ``ssi``, ``fourier``) with figures, a
  table and a JSON of fitted numbers (:mod:`sgdlab.reproduce`).

Invalid input (configuration, overrides, options) is reported as one line
``error: field: got VALUE; allowed: WHAT`` on stderr with exit status 2.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table
from typer import _click
from typer.core import TyperGroup

from .config import ConfigError, build, load_config, make_engine, validate_config

__all__ = ["app", "DEMO_CONFIG", "DEMO_SEEDS"]


class _OneLineErrors(TyperGroup):
    """Report usage errors and :class:`ConfigError` as one ``error:`` line, exit status 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        from ._cache import enable_compilation_cache

        enable_compilation_cache()
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
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


def _fail(message: str, code: int = 2) -> None:
    print("error: " + " ".join(message.split()), file=sys.stderr)
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
    help="Online SGD in high dimension: full simulation, exact Gram-matrix chain and ODE limit.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _stdout(markup: bool = True) -> Console:
    return Console(file=sys.stdout, highlight=False, markup=markup, width=max(100, Console().width))


# --------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------


class _ProgressBar:
    """A rich progress bar on stderr, shown only on a terminal, started at the first report."""

    def __init__(self, total: int, description: str) -> None:
        self.total, self.description = total, description
        self.console = Console(stderr=True)
        self.enabled = self.console.is_terminal
        self.progress = None
        self.task = None

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        if self.progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("steps, ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(self.description, total=self.total)
        self.progress.update(self.task, completed=done)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _median_escape(escape: list[int | None]) -> float | None:
    hit = [e for e in escape if e is not None]
    return float(np.median(hit)) if hit else None


def _fmt(x: Any, spec: str = "") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, spec)


def execute(cfg, out_dir: Path, *, engine: Any = None, progress: bool = True, **extra: Any) -> dict:
    """Run a validated configuration, write its folder and return the summary."""
    from . import run as run_sgd
    from .io import summarise, write_run

    built = build(cfg, engine=engine is None)
    eng = built.engine if engine is None else engine
    bar = _ProgressBar(built.training.steps, f"{cfg.engine} d={cfg.d}") if progress else None
    if bar is not None and not bar.enabled:
        bar = None  # chunked runs only pay off when someone watches the bar
    try:
        result = run_sgd(
            built.problem, built.student, built.training, engine=eng, seeds=cfg.seeds, seed=cfg.seed, progress=bar
        )
    finally:
        if bar is not None:
            bar.close()
    write_run(result, cfg.to_dict(), out_dir, **extra)
    return summarise(result, cfg.to_dict(), out=str(out_dir), **extra)


def _run_table(summary: dict, out_dir: Path) -> Table:
    n = summary["n_seeds"]
    table = Table(title="sgdlab run", show_header=True, header_style="bold")
    for col in ("engine", "d", "seeds", "wall time", "escaped", "median escape step", "diverged", "output"):
        table.add_column(col)
    table.add_row(
        summary["engine"],
        str(summary["d"]),
        str(n),
        f"{summary['wall_time']:.1f} s",
        f"{summary['n_escaped'] / n:.0%}",
        _fmt(_median_escape(summary["escape_step"]), ".0f"),
        str(summary["n_diverged"]),
        str(out_dir),
    )
    return table


@app.command("run")
def run_command(
    config: Annotated[Path, typer.Argument(help="A TOML configuration file.", show_default=False)],
    engine: Annotated[str | None, typer.Option("--engine", help="full, chain or ode (overrides the config).")] = None,
    seeds: Annotated[str | None, typer.Option("--seeds", help="Number of seeds (overrides the config).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder [results/<config>-<engine>].")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: dotted.key=value (TOML value); repeatable.")
    ] = None,
) -> None:
    """Run one configuration; write trajectory.parquet and summary.json."""
    n_seeds = _int_option("--seeds", seeds, "a positive integer")
    cfg = load_config(config, set_ or (), engine=engine, seeds=n_seeds)
    out_dir = out if out is not None else Path("results") / f"{config.stem}-{cfg.engine}"
    summary = execute(cfg, out_dir, config_file=str(config))
    _stdout().print(_run_table(summary, out_dir))


# --------------------------------------------------------------------------------------
# plot
# --------------------------------------------------------------------------------------


@app.command("plot")
def plot_command(
    dirs: Annotated[
        list[Path] | None, typer.Argument(help="Run folders written by 'sgdlab run'.", show_default=False)
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="PNG file [<first folder>/figure.png].")] = None,
    store: Annotated[
        Path | None, typer.Option("--store", help="Overlay the runs of a results store instead [STORE/figure.png].")
    ] = None,
    where: Annotated[
        list[str] | None, typer.Option("--where", help="With --store: column=value (also != < <= > >=); repeatable.")
    ] = None,
) -> None:
    """Overlay runs: normalised overlap and risk against t = samples / d."""
    from .plot import plot_runs

    if store is not None or where:
        if dirs:
            raise ConfigError("plot: got run folders and --store/--where; allowed: either folders or a store query")
        from .sweep import plot_query

        path, n = plot_query(store if store is not None else Path("results"), where or (), out)
        _stdout().print(f"wrote {path} ({n} run{'s' if n != 1 else ''})")
        return
    if not dirs:
        raise ConfigError(
            "DIRS: got nothing; allowed: run folders written by 'sgdlab run', or --store DIR [--where ...]"
        )
    try:
        path = plot_runs(dirs, out)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(str(e)) from None
    _stdout().print(f"wrote {path}")


# --------------------------------------------------------------------------------------
# sweep and results
# --------------------------------------------------------------------------------------


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if not math.isfinite(v) else f"{v:.4g}"
    return str(v)


def _wide_stdout() -> Console:
    """Standard output for wide tables: the terminal's width, or 200 columns into a file or pipe."""
    con = Console(file=sys.stdout, highlight=False)
    return con if con.is_terminal else Console(file=sys.stdout, highlight=False, width=200)


def _runs_table(rows: list[dict], title: str, *, cached: bool = False, limit: int | None = None) -> Table:
    """Runs as a table: key prefix, status, the configuration fields that differ between
    the runs (engine and d otherwise), escape statistics, wall time, creation time, error."""
    from .sweep import varying_columns

    vary = varying_columns(rows)
    shown = [c for c in ("engine", "d") if c not in vary] + vary
    errors = any(r.get("error") for r in rows)
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("key", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for c in shown:
        table.add_column(c, min_width=len(c))
    for c in ("seeds", "escaped", "median escape", "wall \\[s]"):
        table.add_column(c, justify="right")
    if cached:
        table.add_column("cached")
    table.add_column("created (UTC)", no_wrap=True)
    if errors:
        table.add_column("error", overflow="fold")
    style = {"failed": "red", "diverged": "yellow"}
    for r in rows[:limit] if limit else rows:
        st = r["status"]
        cells = [r["key"][:10], f"[{style[st]}]{st}[/]" if st in style else st]
        cells += [_cell(r.get(c)) for c in shown]
        frac = r.get("frac_escaped")
        cells += [
            _cell(r.get("n_seeds")),
            "-" if frac is None else f"{frac:.0%}",
            _cell(r.get("median_escape_step")),
            "-" if r.get("wall_time") is None else f"{r['wall_time']:.1f}",
        ]
        if cached:
            cells.append("yes" if r.get("cached") else "")
        created = r.get("created_at") or ""
        cells.append(created[:16].replace("T", " ") or "-")
        if errors:
            cells.append(_cell(r.get("error")))
        table.add_row(*cells)
    return table


@app.command("sweep")
def sweep_command(
    config: Annotated[Path, typer.Argument(help="A TOML configuration file (the base).", show_default=False)],
    grid: Annotated[
        list[str] | None,
        typer.Option("--grid", help="dotted.key=v1,v2,...: one axis of the grid; repeatable (cartesian product)."),
    ] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="full, chain or ode (overrides the config).")] = None,
    seeds: Annotated[str | None, typer.Option("--seeds", help="Number of seeds (overrides the config).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a base key: dotted.key=value; repeatable.")
    ] = None,
    store: Annotated[Path, typer.Option("--store", help="Results store folder.")] = Path("results"),
    workers: Annotated[str | None, typer.Option("--workers", help="Local worker processes [one per core].")] = None,
    dask: Annotated[
        str | None, typer.Option("--dask", help="Send the runs to a dask scheduler, e.g. tcp://host:8786.")
    ] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run failed runs again.")] = False,
) -> None:
    """Run the cartesian product of the grids over a base config; runs already in the store are reused."""
    from .sweep import default_workers, parse_grid, run_sweep

    n_seeds = _int_option("--seeds", seeds, "a positive integer")
    n_workers = _int_option("--workers", workers, "a positive integer")
    if n_workers is not None and n_workers < 1:
        raise ConfigError(f"--workers: got {workers!r}; allowed: a positive integer")
    if dask is not None and n_workers is not None:
        raise ConfigError("--workers: got a value together with --dask; allowed: one of --workers, --dask")
    axes = parse_grid(grid or ())
    base = load_config(config, set_ or (), engine=engine, seeds=n_seeds).to_dict()
    con = _stdout()

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
    _wide_stdout().print(_runs_table(rows, f"sgdlab sweep: {store}", cached=True, limit=50))
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
) -> None:
    """List the runs of a results store."""
    from .store import Store

    with Store(store, readonly=True) as st:
        rows = st.query(where or ())
    con = _stdout()
    cond = f" where {' and '.join(where)}" if where else ""
    if not rows:
        con.print(f"no runs in {store}{cond}")
        return
    _wide_stdout().print(_runs_table(rows, f"{len(rows)} run{'s' if len(rows) != 1 else ''} in {store}{cond}"))


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
    K: Annotated[str, typer.Option("--K", help="Highest Hermite degree.")] = "8",
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
        "median escape step": _fmt(_median_escape(summary["escape_step"]), ".0f"),
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


@app.command("reproduce")
def reproduce_command(
    name: Annotated[str, typer.Argument(help="info-exponent, smoothing, batch-size, ssi or fourier.",
                                        show_default=False)],
    quick: Annotated[bool, typer.Option("--quick", help="Small version (minutes on a laptop).")] = False,
    engine: Annotated[str | None, typer.Option("--engine", help="chain or full [chain; fourier: full only].",
                                               show_default=False)] = None,
    store: Annotated[Path, typer.Option("--store", help="Results store folder (runs are cached there).")] = Path(
        "results/store"
    ),
    out: Annotated[Path | None, typer.Option("--out", help="Output folder [results/reproduce/NAME[-quick]].")] = None,
    seeds: Annotated[str | None, typer.Option("--seeds", help="Seeds per point (overrides the default).")] = None,
    links: Annotated[
        str | None, typer.Option("--links", help="Comma list of links (info-exponent), e.g. h2,h3,relu.")
    ] = None,
    workers: Annotated[
        str | None, typer.Option("--workers", help="Local worker processes [one per core on CPU].")
    ] = None,
) -> None:
    """Reproduce a system of the literature: figures, table.md and results.json with fitted numbers."""
    from .reproduce import get

    fn = get(name)
    n_seeds = _int_option("--seeds", seeds, "a positive integer")
    n_workers = _int_option("--workers", workers, "a positive integer")
    opts: dict[str, Any] = dict(quick=quick, store=store, out=out, seeds=n_seeds, workers=n_workers,
                                progress=sys.stderr.isatty())
    if engine is not None:  # else each reproduction's own default
        opts["engine"] = engine
    if links is not None:
        if name != "info-exponent":
            raise ConfigError(f"--links: got {links!r}; allowed: only with info-exponent")
        opts["links"] = [x.strip() for x in links.split(",") if x.strip()]
    con = _stdout()
    res = fn(**opts)
    con.print((res.out / "table.md").read_text(), markup=False)
    con.print(f"{name}: {res.summary['wall_time_s']:.1f} s on {res.summary['device']}; wrote "
              + ", ".join(str(f) for f in res.files))


if __name__ == "__main__":  # pragma: no cover
    app()
