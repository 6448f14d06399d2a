"""Run configurations: TOML + overrides -> validated Config -> Problem, Student, Training, engine."""

from pathlib import Path

import pytest

from sgdlab import ODE, Chain, Full
from sgdlab.config import (
    Config,
    ConfigError,
    apply_override,
    build,
    load_config,
    parse_override,
    read_toml,
    validate_config,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "h3_spherical.toml"


def test_defaults_fill_every_section():
    cfg = validate_config({"d": 50})
    assert (cfg.seeds, cfg.seed, cfg.engine) == (1, 0, "chain")
    assert cfg.target.link_spec == "h3" and cfg.target.directions == 1 and cfg.target.noise == 0.0
    assert cfg.student.second_layer == "fixed" and cfg.student.output_scale == "mean"
    assert cfg.train.init == "random" and cfg.train.escape_threshold == 0.5
    assert cfg.ode.second_order is True and cfg.full.dtype == "float32"
    d = cfg.to_dict()
    assert set(d) == {"d", "seeds", "seed", "engine", "target", "student", "train", "ode", "full"}
    assert validate_config(d) == cfg  # the resolved dict is itself a valid config


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("train.lr=0.01", ["train", "lr"], 0.01),
        ("train.steps=20", ["train", "steps"], 20),
        ("train.spherical=true", ["train", "spherical"], True),
        ("student.activation=relu", ["student", "activation"], "relu"),
        ('student.activation="relu"', ["student", "activation"], "relu"),
        ("target.hermite=[0, 0, 1.5]", ["target", "hermite"], [0, 0, 1.5]),
        ("train.init=random", ["train", "init"], "random"),
        ("d=300", ["d"], 300),
    ],
)
def test_parse_override_reads_toml_values(text, key, value):
    k, v = parse_override(text)
    assert k == key and v == value and type(v) is type(value)


@pytest.mark.parametrize("text", ["train.lr", "=3", "train..lr=1", "train.lr=[1,", 'x="a'])
def test_parse_override_rejects_bad_syntax(text):
    with pytest.raises(ConfigError):
        parse_override(text)


def test_overrides_nest_and_reject_scalars_as_tables():
    data = {"d": 10, "train": {"lr": 1.0}}
    apply_override(data, ["train", "steps"], 5)
    apply_override(data, ["ode", "rtol"], 1e-6)
    assert data == {"d": 10, "train": {"lr": 1.0, "steps": 5}, "ode": {"rtol": 1e-6}}
    with pytest.raises(ConfigError, match=r"^d: got 10"):
        apply_override(data, ["d", "x"], 1)


def test_config_builds_library_objects():
    cfg = load_config(
        data={"d": 40, "target": {"hermite": [0, 1, 0, 1], "directions": 2, "weights": [1, -1], "noise": 0.1}},
        overrides=["student.width=3", "student.second_layer=trained", "student.a0=[1, 2, 3]", "train.init=0.3"],
    )
    b = build(cfg, engine=True)
    assert b.problem.d == 40 and b.problem.r == 2 and b.problem.weights == (1.0, -1.0) and b.problem.noise == 0.1
    assert b.problem.link.coeffs == (0.0, 1.0, 0.0, 1.0)
    assert b.student.p == 3 and b.student.trained and b.student.a0 == (1.0, 2.0, 3.0)
    assert b.training.init == 0.3 and isinstance(b.engine, Chain)


def test_engine_sections_reach_the_engines():
    cfg = validate_config({"d": 10, "engine": "full", "full": {"dtype": "float64"}})
    assert build(cfg, engine=True).engine == Full(dtype="float64")
    cfg = validate_config({"d": 10, "engine": "ode", "ode": {"second_order": False, "rtol": 1e-6, "atol": 1e-9}})
    eng = build(cfg, engine=True).engine
    assert isinstance(eng, ODE) and eng.name == "ode"
    assert (eng.second_order, eng.rtol, eng.atol) == (False, 1e-6, 1e-9)
    cfg = validate_config({"d": 10, "engine": "chain", "chain": {"dtype": "float32"}})
    assert build(cfg, engine=True).engine == Chain(dtype="float32")
    # without a [chain] table the resolved configuration (and so the store key) is unchanged
    assert "chain" not in validate_config({"d": 10}).to_dict()
    assert build(validate_config({"d": 10}), engine=True).engine == Chain()


def test_cli_overrides_take_precedence(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('d = 30\nseeds = 4\nengine = "full"\n[train]\nlr = 0.5\n')
    cfg = load_config(f, ["train.lr=0.25", "seeds=5"], engine="chain", seeds=7)
    assert (cfg.d, cfg.seeds, cfg.engine, cfg.train.lr) == (30, 7, "chain", 0.25)


@pytest.mark.parametrize(
    ("overrides", "field", "value"),
    [
        (["train.lr=-1"], "train.lr", "-1"),
        (["train.lr=abc"], "train.lr", "'abc'"),
        (["train.lrr=1"], "train.lrr", "1"),
        (["train.batch=0"], "train.batch", "0"),
        (["train.init=2"], "train.init", "2"),
        (["train.init=sideways"], "train.init", "'sideways'"),
        (["train.spherical=1"], "train.spherical", "1"),
        (["student.activation=foo"], "student.activation", "'foo'"),
        (["student.second_layer=frozen"], "student.second_layer", "'frozen'"),
        (["student.a0=[1, 2]"], "student.a0", "[1.0, 2.0]"),
        (["target.weights=[1, 'x']"], "target.weights.1", "'x'"),
        (["target.hermite=[0, 1]", "target.link=h2"], "target", "hermite="),
        (["engine=warp"], "engine", "'warp'"),
        (["seeds=0"], "seeds", "0"),
        (["d=2"], "d", "2"),
        (["d=true"], "d", "True"),
        (["full.dtype=float16"], "full.dtype", "'float16'"),
        (["chain.dtype=float16"], "chain.dtype", "'float16'"),
        (["ode.rtol=0"], "ode.rtol", "0"),
        (["bogus.key=1"], "bogus", "1"),
    ],
)
def test_invalid_values_give_one_line_naming_field_and_value(overrides, field, value):
    with pytest.raises(ConfigError) as info:
        load_config(data={"d": 20}, overrides=overrides)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{field}: ")
    assert value in msg and "allowed" in msg


def test_missing_required_key_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^d: got nothing"):
        load_config(data={})
    with pytest.raises(ConfigError, match=r"^config: got '.*nope\.toml'; allowed"):
        read_toml(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("d = = 3\n")
    with pytest.raises(ConfigError, match=r"^config: got invalid TOML"):
        read_toml(bad)


def test_example_config_is_the_demo_config():
    from sgdlab.cli import DEMO_CONFIG

    example = load_config(EXAMPLE)
    assert isinstance(example, Config)
    assert example == validate_config(DEMO_CONFIG)


def test_smoothing_reaches_training_and_is_validated():
    cfg = load_config(
        data={"d": 100, "train": {"spherical": True, "loss": "correlation"}},
        overrides=["train.smoothing=3.2", "train.smoothing_nodes=5"],
    )
    b = build(cfg)
    assert b.training.smoothing == 3.2 and b.training.smoothing_nodes == 5
    with pytest.raises(ConfigError, match="train.smoothing: got 2.0; allowed: .*sphere"):
        build(load_config(data={"d": 100, "train": {"smoothing": 2.0}}))  # rows not on the sphere


def test_too_few_wishart_degrees_of_freedom_is_a_config_error():
    """d - width - directions must cover min(batch, width) (the chain's Bartlett draw)."""
    with pytest.raises(ConfigError, match=r"d: got 6; allowed: an integer >= .* = 7"):
        build(load_config(data={"d": 6, "student": {"width": 3}, "train": {"batch": 8}}))
    build(load_config(data={"d": 7, "student": {"width": 3}, "train": {"batch": 8}}))


def test_pca_start_from_toml_reaches_training_and_keeps_other_keys():
    """``train.init = "pca"`` with its three keys builds the PCA start; a configuration without it
    has no PCA keys in its resolved dict (so its store key is unchanged). Planted bugs: the PCA
    keys dropped on the way to Training (a silent random start), or written into every config."""
    cfg = load_config(data={"d": 64, "train": {"init": "pca", "pca_samples": 128, "pca_sign": "labels",
                                               "pca_labels": 16}})
    t = build(cfg).training
    assert (t.init, t.pca_samples, t.pca_sign, t.pca_labels) == ("pca", 128, "labels", 16)
    assert cfg.to_dict()["train"]["pca_samples"] == 128 and validate_config(cfg.to_dict()) == cfg
    assert not {"pca_samples", "pca_sign", "pca_labels"} & set(validate_config({"d": 50}).to_dict()["train"])
    with pytest.raises(ConfigError, match=r"^train.pca_samples: got None; allowed"):
        build(load_config(data={"d": 64, "train": {"init": "pca"}}))
    with pytest.raises(ConfigError, match=r"^train.pca_sign: got 'up'; allowed"):
        load_config(data={"d": 64, "train": {"init": "pca", "pca_samples": 8, "pca_sign": "up"}})
