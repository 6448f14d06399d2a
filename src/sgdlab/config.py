"""Run configurations: a TOML file, validated, turned into a problem, a student, a training rule and an engine.

A configuration has top-level keys ``d``, ``seeds``, ``seed``, ``engine`` and the tables
``[target]``, ``[student]``, ``[train]``, ``[ode]``, ``[full]`` and optionally ``[data]``
(the input law, see :class:`DataConfig`) or ``[sequence]``::

    d = 500
    seeds = 64
    engine = "chain"            # "full", "chain", "ode" or "sde"

    [target]
    link = "h3"                 # a name, or hermite = [c0, c1, ...] (exactly one of the two)

    [student]
    activation = "h3"           # a name or a list of orthonormal Hermite coefficients

    [train]
    lr = 0.002
    batch = 32
    steps = 2000
    spherical = true
    init = 0.2                  # "random", "random_positive", "pca" (with pca_samples) or a number m0
    norm = "euclidean"          # or "covariance": rows keep |w|_Sigma = 1 (spiked data)

Types and keys are checked here (unknown keys are errors); values are checked by the
constructors of :class:`~sgdlab.model.Problem`, :class:`~sgdlab.model.Student`,
:class:`~sgdlab.model.Training` and by :meth:`~sgdlab.model.Model.check`. Every problem is
reported as a :class:`ConfigError` whose message is one line of the form
``field: got VALUE; allowed: WHAT``.
"""

from __future__ import annotations

import re
import tomllib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ._errors import did_you_mean
from .model import Problem, Student, Training

__all__ = [
    "ENGINES",
    "Built",
    "Config",
    "ConfigError",
    "apply_override",
    "build",
    "load_config",
    "parse_override",
    "validate_config",
]

ENGINES = ("full", "chain", "ode", "sde")
MAX_SEEDS = 1 << 24  # seeds of one run (vmapped together)
MAX_SEED = (1 << 63) - 1  # jax.random.key takes a signed 64-bit seed

Number = float  # strict pydantic floats accept TOML integers as well
Coefficients = list[float]


class ConfigError(ValueError):
    """An invalid configuration or command-line input; the message is one line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TargetConfig(_Section):
    """``[target]``: y = sum_k weights_k * link(nu_k) + noise * xi over ``directions`` teacher fields."""

    link: str | Coefficients | None = None
    hermite: Coefficients | None = None
    directions: int = 1
    weights: list[Number] | None = None
    noise: Number = 0.0

    @model_validator(mode="after")
    def _one_link(self) -> TargetConfig:
        if self.link is not None and self.hermite is not None:
            raise ValueError(
                f"got link={self.link!r} and hermite={self.hermite!r}; allowed: exactly one of link, hermite"
            )
        return self

    @property
    def link_spec(self) -> str | list[float]:
        if self.hermite is not None:
            return list(self.hermite)
        return "h3" if self.link is None else self.link


class StudentConfig(_Section):
    """``[student]``: f(x) = s * sum_j a_j activation(w_j . x) with ``width`` neurons."""

    width: int = 1
    activation: str | Coefficients = "h3"
    second_layer: Literal["fixed", "trained"] = "fixed"
    output_scale: Literal["mean", "sqrt", "sum"] = "mean"
    a0: Number | list[Number] = 1.0


PCA_KEYS = ("pca_samples", "pca_sign", "pca_labels")  # [train] keys of init = "pca"


class TrainConfig(_Section):
    """``[train]``: one-pass minibatch SGD (see :class:`sgdlab.model.Training`)."""

    loss: Literal["square", "correlation"] = "square"
    lr: Number = 0.01
    lr_second: Number | None = None
    batch: int = 1
    steps: int = 1000
    spherical: bool = False
    projected: bool = False
    init: Literal["random", "random_positive", "pca"] | Number = "random"
    pca_samples: int | None = None
    pca_sign: Literal["random", "labels", "positive"] = "random"
    pca_labels: int = 0
    norm: Literal["euclidean", "covariance"] = "euclidean"
    record_every: int = 100
    escape_threshold: Number = 0.5
    smoothing: Number | None = None
    smoothing_nodes: int | None = None
    stop_fraction: Number | None = None


class ODEConfig(_Section):
    """``[ode]``: the deterministic limit; ``second_order`` keeps the finite-d lr^2 term."""

    second_order: bool = True
    rtol: Number = Field(default=1e-8, gt=0)
    atol: Number = Field(default=1e-10, gt=0)


class SDEConfig(_Section):
    """``[sde]``: the diffusion limit of the search phase (single index, spherical SGD):
    the adaptive solver's tolerances, its largest step in units of the noise time, and the
    step-size check (the same paths with both halved)."""

    rtol: Number = Field(default=1e-2, gt=0)
    atol: Number = Field(default=1e-2, gt=0)
    dtmax: Number = Field(default=0.1, gt=0)
    check_dt: bool = True


class FullConfig(_Section):
    """``[full]``: the d-dimensional simulation's floating-point type."""

    dtype: Literal["float32", "float64"] = "float32"


class ChainConfig(_Section):
    """``[chain]``: the exact chain's floating-point type (``float32``: faster, accuracy
    against float64 in BENCHMARKS.md)."""

    dtype: Literal["float32", "float64"] = "float64"


class SequenceConfig(_Section):
    """``[sequence]``: L-token inputs (``sgdlab.sequence``). ``target.link`` is the per-token link
    and ``student.activation`` the student's activation; see :class:`~sgdlab.sequence.SequenceProblem`
    and :class:`~sgdlab.sequence.SequenceStudent`."""

    length: int = 2
    combine: Literal["sum", "pooled", "product", "difference", "staircase", "attention"] = "sum"
    scale: Literal["one", "mean", "sqrt"] = "sqrt"
    positional: Literal["opposite"] | list[list[Number]] | None = None
    positional_scale: Number = 1.0
    omega: Number = 0.0
    attention_a: Number = 1.0
    student: Literal["tied", "plain", "attention"] = "tied"
    pooling: Literal["field", "sum"] = "field"
    readout: Literal["matrix", "trace", "projection"] = "matrix"
    projection: list[list[Number]] | None = None


class DataConfig(_Section):
    """``[data]``: the input law (``sgdlab.data``). ``kind``:

    - ``"isotropic"``: x ~ N(0, I_d) (the default; no other keys);
    - ``"spiked"``: x ~ N(0, I_d + strength v v^T), v = overlap * w*_0 + sqrt(1 - overlap^2) u,
      u a unit vector orthogonal to the teacher span (``strength``, ``overlap``: a number each,
      or one per spike); the target sees the raw teacher fields w*.x;
    - ``"mixture"``: clusters c with ``probs`` (default uniform) and ``means`` (K rows of
      frame coordinates: the first ``target.directions`` along the teacher directions),
      in-frame spread ``latent_std`` and orthogonal noise ``sigma_perp`` (a number or K);
      ``labels`` (K numbers) makes the label y = labels[c] + noise instead of the target's
      link; ``switch_step`` with ``sigma_perp_after`` changes the orthogonal noise at that
      step (a curriculum).
    """

    kind: Literal["isotropic", "spiked", "mixture"] = "isotropic"
    strength: Number | list[Number] | None = None
    overlap: Number | list[Number] | None = None
    means: list[list[Number]] | None = None
    probs: list[Number] | None = None
    latent_std: Number | list[Number] = 1.0
    sigma_perp: Number | list[Number] = 1.0
    labels: list[Number] | None = None
    switch_step: int | None = None
    sigma_perp_after: Number | list[Number] | None = None

    @model_validator(mode="after")
    def _keys_of_kind(self) -> DataConfig:
        used = {
            "isotropic": set(),
            "spiked": {"strength", "overlap"},
            "mixture": {"means", "probs", "latent_std", "sigma_perp", "labels", "switch_step", "sigma_perp_after"},
        }[self.kind]
        for name in type(self).model_fields:
            if name == "kind" or name in used:
                continue
            value, default = getattr(self, name), type(self).model_fields[name].default
            if value != default:
                raise ValueError(f"got {name}={value!r} with kind={self.kind!r}; allowed: the keys of that kind "
                                 f"({', '.join(sorted(used)) or 'none'})")
        if self.kind == "mixture" and self.means is None:
            raise ValueError("got kind='mixture' without means; allowed: means = K rows of frame coordinates")
        if (self.switch_step is None) != (self.sigma_perp_after is None):
            raise ValueError("got only one of switch_step, sigma_perp_after; allowed: both or neither")
        return self


class Config(_Section):
    """A complete run configuration (all defaults filled in once validated)."""

    d: int
    seeds: int = Field(default=1, ge=1, le=MAX_SEEDS)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    engine: Literal["full", "chain", "ode", "sde"] = "chain"
    target: TargetConfig = TargetConfig()
    student: StudentConfig = StudentConfig()
    train: TrainConfig = TrainConfig()
    ode: ODEConfig = ODEConfig()
    full: FullConfig = FullConfig()
    sde: SDEConfig | None = None
    chain: ChainConfig | None = None
    sequence: SequenceConfig | None = None
    data: DataConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain JSON/TOML-compatible data (without a
        ``sequence``, ``data``, ``chain`` or ``sde`` table when there is none, so configurations without
        them keep their keys and store keys)."""
        skip: dict[str, Any] = {k: True for k in ("sequence", "data", "chain", "sde") if getattr(self, k) is None}
        train_skip = set()
        if self.train.init != "pca":  # the PCA start's keys only where it is used
            train_skip |= set(PCA_KEYS)
        if self.train.norm == "euclidean":  # the default norm is left out: earlier store keys are unchanged
            train_skip.add("norm")
        if train_skip:
            skip["train"] = train_skip
        return self.model_dump(mode="json", exclude=skip or None)


# --------------------------------------------------------------------------------------
# Validation errors as one line
# --------------------------------------------------------------------------------------


def _section_type(ann: Any) -> type[BaseModel] | None:
    """The section model of a field annotation (``Section`` or ``Section | None``)."""
    for t in (ann, *typing.get_args(ann)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def _field_path(loc: tuple, root: type[BaseModel] = Config) -> str:
    """Dotted field path of a pydantic error location, without union-member tags."""
    parts: list[str] = []
    model: type[BaseModel] | None = root
    for item in loc:
        if isinstance(item, int):
            parts.append(str(item))
            model = None
        elif model is not None and item in model.model_fields:
            parts.append(item)
            model = _section_type(model.model_fields[item].annotation)
        elif model is not None and not parts:
            parts.append(str(item))  # unknown top-level key
            model = None
        elif model is not None:
            parts.append(str(item))  # unknown key inside a section
            model = None
        # otherwise: a union-member tag such as "float" or "literal['random']": skip
    return ".".join(parts) if parts else "config"


def _section_model(path: str) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    if not path or path == "config":
        return model
    for name in path.split("."):
        f = model.model_fields.get(name)
        sub = None if f is None else _section_type(f.annotation)
        if sub is None:
            return None
        model = sub
    return model


def _allowed(msg: str) -> str:
    for prefix in ("Input should be ", "Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg[:1].lower() + msg[1:]


def _one_line(s: str) -> str:
    return " ".join(str(s).split())


def format_validation_error(err: ValidationError) -> str:
    """Turn a pydantic ``ValidationError`` into lines ``field: got VALUE; allowed: WHAT``, one
    per invalid field (all of them, in the order of the configuration)."""
    errors = err.errors(include_url=False)
    paths: dict[str, list[dict]] = {}
    for e in errors:
        paths.setdefault(_field_path(tuple(e["loc"])), []).append(e)
    return "\n".join(_error_line(path, same) for path, same in paths.items())


def _error_line(path: str, same: list[dict]) -> str:
    first = same[0]
    kind = first["type"]
    if kind == "extra_forbidden":
        parent, _, name = path.rpartition(".")
        model = _section_model(parent)
        names = list(model.model_fields) if model is not None else []
        keys = ", ".join(names) or "?"
        where = f"[{parent}]" if parent else "top level"
        hint = did_you_mean(name, names)
        return _one_line(f"{path}: got unknown key (value {first['input']!r}){hint}; allowed keys at {where}: {keys}")
    if kind == "missing":
        return _one_line(f"{path}: got nothing (required key missing); allowed: set it in the config or with --set")
    if kind == "value_error":  # raised by a model validator: already "got ...; allowed: ..."
        return _one_line(f"{path}: {_allowed(first['msg'])}")
    allowed = []
    for e in same:
        a = _allowed(e["msg"])
        if a not in allowed:
            allowed.append(a)
    value = first.get("input")
    literal = [x for e in same for x in ((e.get("ctx") or {}).get("expected") or "").replace("'", "").split(" or ")]
    words = [w.strip(", ") for x in literal for w in x.split(",") if w.strip(", ")]
    return _one_line(f"{path}: got {value!r}{did_you_mean(value, words)}; allowed: {' or '.join(allowed)}")


# --------------------------------------------------------------------------------------
# Loading and overriding
# --------------------------------------------------------------------------------------

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``dotted.key=value``; the value is read as a TOML value (int, float, bool,
    string, array), a bare word such as ``h3`` or ``random`` as a string."""
    if "=" not in text:
        raise ConfigError(_one_line(f"--set: got {text!r}; allowed: dotted.key=value, e.g. train.lr=0.01"))
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if not _KEY.match(key):
        raise ConfigError(_one_line(f"--set: got key {key!r}; allowed: a dotted key such as train.lr"))
    if raw == "":
        raise ConfigError(_one_line(f"{key}: got an empty value in --set {text!r}; allowed: a TOML value"))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if raw[0] in "[{\"'" or not re.match(r"^[A-Za-z_][\w\-\[\],.]*$", raw):
            raise ConfigError(
                _one_line(f'{key}: got {raw!r} in --set; allowed: a TOML value (number, true/false, "text", [list])')
            ) from None
        value = raw
    return key.split("."), value


def apply_override(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set ``data[parts[0]][parts[1]]... = value`` in place, creating tables as needed."""
    node = data
    for i, name in enumerate(parts[:-1]):
        nxt = node.get(name)
        if nxt is None:
            nxt = node[name] = {}
        elif not isinstance(nxt, dict):
            dotted = ".".join(parts[: i + 1])
            raise ConfigError(f"{dotted}: got {nxt!r}, which has no key {parts[i + 1]!r}; allowed: a table")
        node = nxt
    node[parts[-1]] = value


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config: got {str(p)!r}; allowed: an existing TOML file")
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(_one_line(f"config: got invalid TOML in {str(p)!r} ({e}); allowed: a TOML file")) from None
    except UnicodeDecodeError:
        raise ConfigError(f"config: got {str(p)!r}, which is not UTF-8 text; allowed: a TOML file") from None
    except OSError as e:
        raise ConfigError(_one_line(f"config: got {str(p)!r} ({e.strerror}); allowed: a readable TOML file")) from None


def validate_config(data: Mapping[str, Any]) -> Config:
    """Validate raw configuration data (types and keys only)."""
    try:
        return Config.model_validate(dict(data))
    except ValidationError as e:
        raise ConfigError(format_validation_error(e)) from None


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    *,
    data: Mapping[str, Any] | None = None,
    engine: str | None = None,
    seeds: int | None = None,
) -> Config:
    """Read ``path`` (or start from ``data``), apply ``--set`` overrides, then ``engine``
    and ``seeds``, and validate: types and keys here, values by :func:`build`."""
    raw: dict[str, Any] = read_toml(path) if path is not None else _deepcopy(dict(data or {}))
    target = raw.get("target") if isinstance(raw.get("target"), dict) else {}
    set_keys: dict[str, Any] = {}
    for item in overrides:
        parts, value = parse_override(item)
        set_keys[".".join(parts)] = value
        # link and hermite are alternatives: setting one replaces the file's other one
        other = {"target.link": "hermite", "target.hermite": "link"}.get(".".join(parts))
        if other is not None and f"target.{other}" not in set_keys:
            target.pop(other, None)
        apply_override(raw, parts, value)
    if engine is not None:
        if "engine" in set_keys and set_keys["engine"] != engine:
            raise ConfigError(f"engine: got {set_keys['engine']!r} in --set and {engine!r} in --engine; "
                              "allowed: one of the two")
        raw["engine"] = engine
    if seeds is not None:
        raw["seeds"] = seeds
    given = seeds if seeds is not None else set_keys.get("seeds")
    if raw.get("engine") == "ode" and isinstance(given, int) and not isinstance(given, bool) and given != 1:
        raise ConfigError(f"seeds: got {given!r} with engine 'ode'; allowed: 1 (the ODE is deterministic: "
                          "one trajectory)")
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError("\n".join([format_validation_error(e), *_value_errors_without(raw, e)])) from None
    build(cfg)  # value checks (constructors and cross-field checks)
    return cfg


def _value_errors_without(raw: dict[str, Any], err: ValidationError) -> list[str]:
    """The value errors of the rest of a configuration with type or key errors: the invalid
    keys dropped (their defaults taken), so that every error is reported in one go."""
    data = _deepcopy(raw)
    for e in err.errors(include_url=False):
        node, loc = data, [x for x in e["loc"] if isinstance(x, str)]
        for name in loc[:-1]:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict) and loc:
            node.pop(loc[-1], None)
    try:
        build(Config.model_validate(data))
    except (ValidationError, ConfigError) as e:
        return [] if isinstance(e, ValidationError) else str(e).splitlines()
    return []


def _deepcopy(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _deepcopy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_deepcopy(v) for v in x]
    return x


# --------------------------------------------------------------------------------------
# Building the library objects
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    problem: Problem
    student: Student
    training: Training
    engine: Any


def make_engine(cfg: Config, name: str | None = None) -> Any:
    """The engine object named by ``name`` (default ``cfg.engine``) with its section's options."""
    from .engines import ODE, SDE, Chain, Full

    name = cfg.engine if name is None else name
    if name == "chain":
        return Chain() if cfg.chain is None else Chain(dtype=cfg.chain.dtype)
    if name == "full":
        return Full(dtype=cfg.full.dtype)
    if name == "ode":
        return ODE(second_order=cfg.ode.second_order, rtol=cfg.ode.rtol, atol=cfg.ode.atol)
    if name == "sde":
        o = SDEConfig() if cfg.sde is None else cfg.sde
        return SDE(rtol=o.rtol, atol=o.atol, dtmax=o.dtmax, check_dt=o.check_dt)
    raise ConfigError(f"engine: got {name!r}; allowed: 'full', 'chain', 'ode' or 'sde'")


def build(cfg: Config, *, engine: bool = False) -> Built:
    """Construct ``Problem``, ``Student``, ``Training`` (and with ``engine=True`` the engine),
    running every value check; a failing check raises :class:`ConfigError`."""
    tr = cfg.train
    errors: list[str] = []

    def attempt(make):
        return _attempt(errors, make)

    parts = attempt(lambda: _sequence_parts(cfg) if cfg.sequence is not None else _parts(cfg))
    training = attempt(lambda: Training(
        loss=tr.loss,
        lr=tr.lr,
        lr_second=tr.lr_second,
        batch=tr.batch,
        steps=tr.steps,
        spherical=tr.spherical,
        projected=tr.projected,
        init=tr.init,
        **({k: getattr(tr, k) for k in PCA_KEYS} if tr.init == "pca" else {}),
        norm=tr.norm,
        record_every=tr.record_every,
        escape_threshold=tr.escape_threshold,
        smoothing=tr.smoothing,
        smoothing_nodes=tr.smoothing_nodes,
        stop_fraction=tr.stop_fraction,
    ))
    eng = None
    if not errors:
        from .api import _model

        problem, student = parts
        attempt(lambda: _model(problem, student, training).check())
        if engine and not errors:
            eng = attempt(lambda: make_engine(cfg))
    if errors:
        raise ConfigError("\n".join(errors))
    return Built(problem, student, training, eng)


def _attempt(errors: list[str], make: Any) -> Any:
    """``make()``, or ``None`` with its error lines appended to ``errors`` (each once)."""
    try:
        return make()
    except ValueError as e:  # ConfigError included
        for line in str(e).splitlines():
            line = _one_line(line)
            if line and line not in errors:
                errors.append(line)
        return None


def data_law(cfg: Config):
    """The :mod:`sgdlab.data` law of a ``[data]`` table (``None`` without one)."""
    from .data import Isotropic, Mixture, Spiked, Switch

    q = cfg.data
    if q is None or q.kind == "isotropic":
        return None if q is None else Isotropic()
    if q.kind == "spiked":
        return Spiked(strength=1.0 if q.strength is None else q.strength,
                      overlap=0.0 if q.overlap is None else q.overlap)
    K = len(q.means)
    sigma = q.sigma_perp
    if q.switch_step is not None:
        def per(v):
            return tuple(float(x) for x in (v if isinstance(v, list) else [v] * K))

        sigma = Switch(q.switch_step, per(q.sigma_perp), per(q.sigma_perp_after))
        if len(sigma.before) != K or len(sigma.after) != K:
            raise ConfigError(f"data.sigma_perp_after: got {q.sigma_perp_after!r}; allowed: a number or {K} numbers")
    return Mixture(means=q.means, probs=q.probs, latent_std=q.latent_std, sigma_perp=sigma)


def _cluster_labels(labels: list[float]):
    import jax.numpy as jnp

    values = tuple(float(v) for v in labels)

    def label(s, c):
        return jnp.asarray(values)[c]

    return label


def _parts(cfg: Config) -> tuple[Problem, Student]:
    t, s = cfg.target, cfg.student
    labels = cfg.data.labels if cfg.data is not None else None
    if labels is not None and len(labels) != len(cfg.data.means):
        raise ConfigError(f"data.labels: got {labels!r}; allowed: one number per cluster ({len(cfg.data.means)})")
    errors: list[str] = []

    def attempt(make):
        return _attempt(errors, make)

    problem = attempt(lambda: Problem(
        d=cfg.d,
        link=t.link_spec,
        directions=t.directions,
        weights=None if t.weights is None else tuple(t.weights),
        noise=t.noise,
        function=None if labels is None else _cluster_labels(labels),
        data=data_law(cfg),
    ))
    student = attempt(lambda: Student(
        width=s.width,
        activation=s.activation,
        second_layer=s.second_layer,
        output_scale=s.output_scale,
        a0=s.a0 if isinstance(s.a0, float | int) else tuple(s.a0),
    ))
    if errors:
        raise ConfigError("\n".join(errors))
    return problem, student


def _sequence_parts(cfg: Config):
    from .sequence import SequenceProblem, SequenceStudent

    t, s, q = cfg.target, cfg.student, cfg.sequence
    if cfg.data is not None and cfg.data.kind != "isotropic":
        raise ConfigError(f"data.kind: got {cfg.data.kind!r}; allowed: 'isotropic' with a [sequence] table")
    if t.directions != 1:
        raise ConfigError(f"target.directions: got {t.directions}; allowed: 1 with a [sequence] table")
    if s.width != 1:
        raise ConfigError(f"student.width: got {s.width}; allowed: 1 with a [sequence] table "
                          "(the plain network has one row per token)")
    problem = SequenceProblem(
        d=cfg.d, length=q.length, link=t.link_spec, combine=q.combine, scale=q.scale,
        positional=q.positional, positional_scale=q.positional_scale, omega=q.omega,
        attention_a=q.attention_a, noise=t.noise,
    )
    student = SequenceStudent(
        kind=q.student, activation=s.activation, pooling=q.pooling, readout=q.readout,
        projection=q.projection, length=q.length,
    )
    return problem, student
