"""The synthetic dataset is deterministic; the ingest stage commits once and never half-writes."""

import hashlib
import subprocess
import sys

import pytest

from ssl_ray.config import load_config
from ssl_ray.errors import ConfigError, DatasetError
from ssl_ray.io.storage import Store
from ssl_ray.stages.ingest import ingest_labeled
from ssl_ray.synth import SynthSpec, generate


def digest(root):
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_synth_is_seeded(tmp_path):
    spec = SynthSpec(n_train=5, n_val=2, n_pool=3, imgsz=64)
    generate(tmp_path / "a", spec)
    generate(tmp_path / "b", spec)
    generate(tmp_path / "c", SynthSpec(n_train=5, n_val=2, n_pool=3, imgsz=64, seed=1))
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")
    assert len(list((tmp_path / "a" / "images" / "pool").iterdir())) == 3


@pytest.mark.parametrize(
    "kw",
    [{"n_classes": 0}, {"n_classes": 9}, {"domain": "other"}, {"max_overlap": 1.0}, {"min_size": 0.5, "max_size": 0.2}],
)
def test_synth_spec_validates(kw):
    with pytest.raises(ValueError):
        SynthSpec(**kw)


def test_ingest_commits_once(tmp_path, shapes):
    cfg = load_config(None, [f"labeled.data={shapes}", f"output.dir={tmp_path / 'run'}"])
    out = Store(cfg.output.dir)
    first = ingest_labeled(cfg, out)
    assert out.exists("labeled/_COMMITTED") and len(first.train) == 24 and len(first.val) == 8
    before = digest(tmp_path / "run")
    again = ingest_labeled(cfg, out)
    assert digest(tmp_path / "run") == before
    assert [r["image_id"] for r in again.train] == [r["image_id"] for r in first.train]
    changed = load_config(None, [f"labeled.data={shapes}", f"output.dir={tmp_path / 'run'}", "labeled.on_error=skip"])
    with pytest.raises(
        ConfigError, match=r"labeled produced with other settings \(labeled.on_error: 'fail' -> 'skip'\)"
    ):
        ingest_labeled(changed, out)


def test_ingest_failure_writes_nothing(tmp_path, shapes):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(shapes.parent, root)
    (root / "labels" / "val" / "val_000003.txt").write_text("0 0.5 0.5 0.2\n")
    cfg = load_config(None, [f"labeled.data={root / 'data.yaml'}", f"output.dir={tmp_path / 'run'}"])
    with pytest.raises(DatasetError, match=r"labels/val/val_000003.txt:1: expected 'cls x y w h'"):
        ingest_labeled(cfg, Store(cfg.output.dir))
    assert not (tmp_path / "run").exists()
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "ssl_ray.cli",
            "ingest",
            f"labeled.data={root / 'data.yaml'}",
            f"output.dir={tmp_path / 'run2'}",
        ],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 2
    assert len(cli.stderr.strip().splitlines()) == 1 and "val_000003.txt:1" in cli.stderr
    assert not list((tmp_path / "run2").rglob("*"))  # preflight made the folder; nothing inside


def test_ingest_cli_summary(tmp_path, shapes):
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "ssl_ray.cli",
            "ingest",
            "-",
            f"labeled.data={shapes}",
            f"output.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    assert "train" in cli.stdout and "24" in cli.stdout and "classes: circle, square, triangle" in cli.stdout
