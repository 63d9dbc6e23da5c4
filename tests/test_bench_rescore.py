"""bench/rescore.py: which data root a relative yaml means, and which rounds a run folder holds."""
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

_spec = importlib.util.spec_from_file_location("rescore", Path(__file__).parents[1] / "bench" / "rescore.py")
rescore = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rescore)


@pytest.mark.parametrize("path, expected", [
    (".", "data"),           # the synthetic sets' `path: .`: the yaml's own folder
    ("sub", "data/sub"),
    (None, "data"),          # no path at all: the yaml's folder too
])
def test_relative_data_root_is_the_yaml_folder(tmp_path, path, expected):
    (tmp_path / "data").mkdir()
    spec = {"train": "images/train", "val": "images/val", "names": {0: "a"}}
    if path is not None:
        spec["path"] = path
    (tmp_path / "data" / "data.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "copy").mkdir()
    out = yaml.safe_load(rescore.absolute_data_yaml(tmp_path / "data" / "data.yaml", tmp_path / "copy").read_text())
    assert out["path"] == str((tmp_path / expected).resolve())
    assert out["val"] == "images/val" and out["names"] == {0: "a"}


def test_absolute_data_root_is_kept(tmp_path):
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"path": "/srv/set", "val": "v", "names": ["a"]}))
    (tmp_path / "copy").mkdir()
    assert yaml.safe_load(rescore.absolute_data_yaml(tmp_path / "data.yaml", tmp_path / "copy").read_text())["path"] == "/srv/set"


def test_rounds_of_a_run(tmp_path):
    for name, score, weights in [("r000", 0.5, False), ("r001", 0.6, True)]:
        folder = tmp_path / "rounds" / name
        (folder / "weights").mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"held_out": {"mAP50-95": score}}))
        if weights:
            (folder / "weights" / "best.pt").write_bytes(b"")
    (tmp_path / "rounds" / "r002" / "ray").mkdir(parents=True)  # still training: Ray checkpoints, no metrics.json
    rows = rescore.rounds_of(tmp_path)
    assert [(r["round"], r["recorded"], r["weights"] is not None) for r in rows] == [
        ("r000", 0.5, False), ("r001", 0.6, True), ("r002", None, False)]
