"""The report from round records alone (no Ray): table, JSON and the three plots."""

import io
import json

import pytest
from PIL import Image

from ssl_ray.io.storage import Store
from ssl_ray.stages.report import COLUMNS, table_rows, threshold_cell, write_report


def rounds():
    held = lambda m: {"mAP50": m + 0.1, "mAP50-95": m, "per_class": {}}  # noqa: E731
    label = {
        "items": 40,
        "pseudo": 12,
        "negative": 5,
        "negative_used": 3,
        "uncertain": 20,
        "rejected": 3,
        "pseudo_boxes_per_class": {"circle": 9, "square": 4},
        "seconds": 7.5,
        "score_histogram": [30, 10, 5, 2, 0, 0, 1, 0, 4, 9],
    }
    return [
        {
            "round": 0,
            "threshold": None,
            "labeled_images": 24,
            "held_out": held(0.2),
            "seconds": 30.0,
            "stage_seconds": {"train": 29.0},
        },
        {
            "round": 1,
            "threshold": 0.6,
            "labeled_images": 24,
            "train_images": 39,
            "held_out": held(0.3),
            "seconds": 50.0,
            "label": label,
            "stage_seconds": {"label": 7.5, "merge": 0.4, "train": 40.0},
        },
    ]


def test_table_rows_carry_counts_classes_and_stage_times():
    r0, r1 = table_rows(rounds())
    assert len(r0) == len(r1) == len(COLUMNS)
    row = dict(zip(COLUMNS, r1))
    assert row["pool items"] == 40 and row["negative (used)"] == "5 (3)" and row["rejected"] == 3
    assert row["pseudo boxes per class"] == "circle 9, square 4"
    assert row["train images"] == 39 and row["label s"] == 7.5 and row["train s"] == 40.0
    assert dict(zip(COLUMNS, r0))["train images"] == 24 and dict(zip(COLUMNS, r0))["label s"] == "-"
    online = {**rounds()[1], "unlabeled_images": 37, "epoch_images": 48}  # train.ssl: online: labels + the pool
    assert dict(zip(COLUMNS, table_rows([online])[0]))["train images"] == "24 + 37 unlabeled"


@pytest.mark.parametrize(
    "threshold, per_class, cell",
    [
        (None, None, "-"),  # round 0
        (0.6, None, "0.60"),  # no per-class record
        (0.6, {"a": 0.6, "b": 0.6}, "0.60"),
        (0.5, {"a": 0.35, "b": 0.7, "c": 0.22}, "0.22-0.70"),  # adaptive: the range, not the fallback
        (0.5, {"a": 0.3, "b": 0.3}, "0.30"),  # one per-class cut for every class
    ],
)
def test_threshold_cell_shows_the_cut_the_round_selected_with(threshold, per_class, cell):
    assert threshold_cell(threshold, per_class) == cell


def test_write_report(tmp_path):
    out = Store(str(tmp_path / "run"))
    write_report(out, rounds(), best=1)
    report = tmp_path / "run" / "report"
    assert json.loads((report / "report.json").read_text())["best_round"] == 1
    md = (report / "report.md").read_text()
    assert "| round | threshold | pool items |" in md and "| 1 | 0.60 | 40 | 12 | 5 (3) |" in md
    for name in ("map_per_round.png", "pseudo_per_class.png", "score_histogram.png"):
        assert f"]({name})" in md
        with Image.open(io.BytesIO((report / name).read_bytes())) as im:
            assert im.format == "PNG" and im.size[0] >= 400


CONTROL = [
    {
        "round": 1,
        "labeled_copies": 2,
        "epochs": 3,
        "iterations": 9,
        "round_iterations": 9,
        "held_out": {"mAP50": 0.35, "mAP50-95": 0.25, "per_class": {}},
    }
]


def test_the_report_sets_every_round_beside_its_control(tmp_path):
    from ssl_ray.stages.report import columns, gains

    g = gains(rounds(), CONTROL)[1]
    assert abs(g["gain_mAP50-95"] - 0.05) < 1e-9 and abs(g["gain_mAP50"] - 0.05) < 1e-9
    r0, r1 = table_rows(rounds(), CONTROL)
    head = columns(CONTROL)
    assert dict(zip(head, r1))["control mAP50-95"] == "0.250" and dict(zip(head, r1))["over control"] == "+0.050"
    assert dict(zip(head, r0))["over control"] == "-"  # round 0 is the control's start
    out = Store(str(tmp_path / "run"))
    write_report(out, rounds(), best=1, control=CONTROL)
    md = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "| control mAP50-95 | over control |" in md
    assert "- round 1: +0.050 mAP50-95 (+0.050 mAP50) over training as long on your labels alone" in md
    body = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
    assert body["control"] == CONTROL and body["over_control"]["1"]["control_mAP50-95"] == 0.25
