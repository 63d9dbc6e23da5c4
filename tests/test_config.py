"""Config: load, overrides, and one clear error per kind of mistake."""

import subprocess
import sys
from pathlib import Path

import pytest

from ssl_ray.config import Config, dump_config, load_config
from ssl_ray.errors import ConfigError

DEMO = Path(__file__).parents[1] / "ssl_ray" / "configs" / "demo.yaml"


def test_defaults_are_for_a_gpu_cluster():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.train.use_gpu and cfg.label.num_gpus_per_actor == 1.0
    assert cfg.select.conf == 0.85 and cfg.model.weights == "yolo26n.pt"


def test_demo_profile_is_small_and_cpu_only():
    cfg = load_config(DEMO)
    assert not cfg.train.use_gpu and cfg.label.num_gpus_per_actor == 0
    assert cfg.model.weights.endswith(".yaml") and cfg.model.imgsz <= 160


@pytest.mark.parametrize(
    "override, check",
    [
        ("select.conf=0.9", lambda c: c.select.conf == 0.9),
        ("train.epochs=3", lambda c: c.train.epochs == 3),
        ("pool.sources=[a, s3://b/c]", lambda c: c.pool.sources == ["a", "s3://b/c"]),
        ("select.per_class={car: 0.7, 2: 0.9}", lambda c: c.select.per_class == {"car": 0.7, "2": 0.9}),
        ("train.extra.lr0=0.001", lambda c: c.train.extra == {"amp": False, "nbs": 16, "lr0": 0.001}),
        ("storage.endpoint_url=http://127.0.0.1:9000", lambda c: c.storage.endpoint_url == "http://127.0.0.1:9000"),
        ("ray.num_cpus=null", lambda c: c.ray.num_cpus is None),
        ("select.min_box_px=3", lambda c: c.select.min_box_px == 3.0 and isinstance(c.select.min_box_px, float)),
    ],
)
def test_overrides(override, check):
    assert check(load_config(DEMO, [override]))


# Settings of experiments that did not pay (docs/research/README.md): retired, and refused by name.
RETIRED = [
    "select.ambiguous_images=mask",
    "train.pseudo_box_weight=0.5",
    "train.max_box_spread=0.01",
    "train.min_box_score=0.5",
    "refine.tta=hv",
    "refine.flips=h",
    "refine.jitter=0.04",
    "label.refine_views=[zoom:1.5]",
    "rounds.student_init=yolo26n.yaml",
    "train.finetune_extra={lr0: 0.001}",
    "select.keep_fraction=0.3",
    "label.keep_freed_heap=false",
]


@pytest.mark.parametrize("override", RETIRED)
def test_retired_settings_are_unknown(override):
    key = override.partition("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key.replace('.', r'[.]')}: unknown setting"):
        load_config(DEMO, [override])


def test_defaults_are_the_best_measured_recipe():
    """Adaptive thresholds, flip consistency, the labeled images ~40 % of each epoch, the box
    refiner with two passes (docs/research/README.md)."""
    cfg = load_config()
    assert cfg.select.adaptive == "val_precision" and cfg.label.consistency_views == ["flip"]
    assert cfg.train.labeled_fraction == 0.4 and cfg.refine.enabled and cfg.refine.passes == 2


@pytest.mark.parametrize(
    "override, message",
    [
        ("select.conf=1.5", "select.conf: 1.5 is out of range, allowed: > 0 and <= 1"),
        ("select.confidence=0.9", "select.confidence: unknown setting"),
        ("select.confidence=0.9", "did you mean 'conf'?"),
        ("selekt.conf=0.9", "selekt: unknown setting"),
        ("train.epochs=ten", "train.epochs: expected int, found str 'ten'"),
        ("train.epochs=2.5", "train.epochs: expected int, found float 2.5"),
        ("train.use_gpu=maybe", "train.use_gpu: expected bool, found str 'maybe'"),
        ("rounds.round0=skip", "rounds.round0: found str 'skip', allowed: 'train', 'evaluate'"),
        ("label.min_actors=9", "label.min_actors (9) must be <= label.max_actors (1)"),
        ("select.negative_max_score=0.9", "select.negative_max_score (0.9) must be below select.conf"),
        ("select.per_class={car: 0}", "select.per_class.car: 0.0 is out of range"),
        ("rounds.conf_schedule=[0.8, 1.2]", "rounds.conf_schedule[1]: 1.2 is out of range"),
        ("pool.sources=abc", "pool.sources: expected a list, found str 'abc'"),
        ("storage=3", "storage: expected a mapping of settings, found int 3"),
        ("storage.endpoint_url=ftp://x", "storage.endpoint_url: expected http(s)://host[:port]"),
        ("noequals", "override 'noequals': expected key.sub=value"),
        (
            "select.adaptive=pool_quantile",
            "select.adaptive: found str 'pool_quantile', allowed: 'global', 'val_precision'",
        ),
    ],
)
def test_errors_name_field_value_and_allowed(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_endpoint_with_credentials_is_refused_without_echoing_them():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["storage.endpoint_url=http://AKIAXXX:topsecret@host:9000"])
    assert "topsecret" not in str(err.value) and "AKIAXXX" not in str(err.value)


def test_bad_yaml_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("select:\n  conf: [0.5\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line \d+"):
        load_config(f)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")


def test_dump_round_trips(tmp_path):
    cfg = load_config(DEMO, ["select.conf=0.7"])
    f = tmp_path / "again.yaml"
    f.write_text(dump_config(cfg))
    assert load_config(f) == cfg


def test_cli_config_show_and_error_exit_code():
    ok = subprocess.run(
        [sys.executable, "-m", "ssl_ray.cli", "config", "show", str(DEMO), "select.conf=0.75"],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "conf: 0.75" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "ssl_ray.cli", "config", "show", str(DEMO), "select.conf=7"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["error: select.conf: 7.0 is out of range, allowed: > 0 and <= 1"]


def test_reference_lists_every_setting():
    out = subprocess.run([sys.executable, "-m", "ssl_ray.cli", "config", "reference"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in ("`select.conf`", "`storage.endpoint_url`", "`train.num_workers`", "`rounds.patience`"):
        assert name in out.stdout


def test_docs_config_reference_is_current():
    out = subprocess.run([sys.executable, "-m", "ssl_ray.cli", "config", "reference"], capture_output=True, text=True)
    doc = (Path(__file__).parents[1] / "docs" / "config.md").read_text()
    assert out.stdout in doc, "docs/config.md is stale: regenerate with `ssl-ray config reference`"
