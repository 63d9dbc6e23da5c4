"""Bucketed finalize against `select.select` over the whole pool at once: the real
`stages.finalize.finalize`, its tasks mapped in this process (and once on Ray), gives for
every bucket count the same predictions, rejects, outcomes, caps and review order."""

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ssl_ray.config import Config, LabelConfig, SelectConfig
from ssl_ray.core import accounting
from ssl_ray.core.accounting import significant
from ssl_ray.core.finalize import bucket_of
from ssl_ray.core.schema import RAW_SCHEMA
from ssl_ray.core.select import select
from ssl_ray.io.storage import Store
from ssl_ray.stages.finalize import finalize, local_map

NAMES = ["car", "person", "bike"]


def raw_pool(n: int, seed: int) -> list[dict]:
    """n items (some rejected, some sharing content), then retried copies of a fifth of them."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        uri = f"s3://pool/img_{i:05d}.jpg"
        if rng.random() < 0.05:
            rows.append(
                {
                    "image_id": "",
                    "uri": uri,
                    "width": 0,
                    "height": 0,
                    "boxes": [],
                    "reject_reason": "corrupt",
                    "reject_detail": "truncated",
                }
            )
            continue
        boxes = [
            {
                "cls": rng.randrange(3),
                "x": 0.5,
                "y": 0.5,
                "w": rng.choice([0.002, 0.1, 0.3]),
                "h": 0.2,
                "score": float(np.float32(rng.random())),
                "agree": rng.choice([None, 0.0, 1.0]),
            }
            for _ in range(rng.choice([0, 0, 1, 2, 5]))
        ]  # scores as Parquet's float32 holds them
        content = i if rng.random() > 0.03 else rng.randrange(max(1, i))  # a few duplicates of earlier content
        rows.append(
            {
                "image_id": f"{content:032x}",
                "uri": uri,
                "width": 640,
                "height": 480,
                "boxes": boxes,
                "video_uri": None,
                "frame_index": None,
                "timestamp_s": None,
                "reject_reason": "",
                "reject_detail": "",
            }
        )
    rows += [dict(r) for r in rng.sample(rows, n // 5)]  # Ray's retried blocks
    rng.shuffle(rows)
    return rows


def write_raw(raw: list[dict], folder, per_file: int = 70) -> Store:
    """The raw rows as the inference actors write them: several Parquet files under raw/."""
    (folder / "raw").mkdir(parents=True)
    for i in range(0, len(raw), per_file):
        pq.write_table(
            pa.Table.from_pylist(raw[i : i + per_file], schema=RAW_SCHEMA), folder / "raw" / f"p{i:04d}.parquet"
        )
    return Store(str(folder))


def outputs(folder, summary: dict) -> dict:
    def read(rel):
        return pq.read_table(folder / rel).to_pylist()

    return {
        "preds": sorted(p["image_id"] for p in read("predictions")),
        "rejects": sorted((r["uri"], r["reason"]) for r in read("rejects")),
        "retries": summary["retried_copies_dropped"],
        "outcomes": sorted((r["image_id"], r["source"], len(r["boxes"])) for r in read("selection")),
        "training": sorted(r["image_id"] for r in read("pseudo")),
        "review": [r["image_id"] for r in read("review/part-000000.parquet")],
        "thresholds": list(summary["class_thresholds"].values()),
        "pseudo_used": summary["pseudo_used"],
        "negative_used": summary["negative_used"],
    }


def whole(raw: list[dict], cfg: SelectConfig, conf: float) -> dict:
    preds, rejects, retries = accounting.dedupe(raw, 1, "t.pt")
    chosen = select(preds, cfg, NAMES, round=1, conf=conf)
    return {
        "preds": sorted(p["image_id"] for p in preds),
        "rejects": sorted((r["uri"], r["reason"]) for r in rejects),
        "retries": retries,
        "outcomes": sorted(
            (r["image_id"], r["source"], len(r["boxes"])) for r in chosen.pseudo + chosen.negative + chosen.uncertain
        ),
        "training": sorted(r["image_id"] for r in chosen.training),
        "review": [r["image_id"] for r in chosen.uncertain[: cfg.review_max]],
        "thresholds": [significant(t) for t in chosen.thresholds],
        "pseudo_used": len(chosen.pseudo_used),
        "negative_used": len(chosen.negatives_used),
    }


@pytest.mark.parametrize(
    "cfg",
    [
        SelectConfig(conf=0.5, negative_max_score=0.1),  # the defaults' shape: no class cap
        SelectConfig(conf=0.6, negative_max_score=0.2, max_images_per_class=7, review_max=5),
        SelectConfig(conf=0.4, negative_max_score=0.3, max_images_per_class=1, max_negative_fraction=0.0),
        SelectConfig(conf=0.7, negative_max_score=0.5, max_negative_fraction=1.0, review_max=0),
        SelectConfig(conf=0.5, negative_max_score=0.1, min_agreement=1.0, per_class={"bike": 0.9}, max_boxes=1),
    ],
)
@pytest.mark.parametrize("rows_per_task", [10_000, 150, 50])  # 1, 3 and 8 buckets of a 400-item pool
def test_buckets_select_what_the_whole_pool_selects(tmp_path, cfg, rows_per_task):
    raw = raw_pool(400, seed=rows_per_task)
    stage = write_raw(raw, tmp_path)
    summary = finalize(
        Config(label=LabelConfig(finalize_rows=rows_per_task), select=cfg),
        stage,
        NAMES,
        1,
        "t.pt",
        None,
        400,
        None,
        local_map,
    )
    expected = whole(raw, cfg, cfg.conf)
    assert summary["finalize_tasks"] == -(-len(raw) // rows_per_task)
    assert outputs(tmp_path, summary) == expected
    assert expected["retries"] > 0 and any(reason == "duplicate" for _, reason in expected["rejects"])
    assert summary["items"] == len(expected["preds"]) + len(expected["rejects"])
    assert not (tmp_path / "scatter").exists()


def test_every_copy_of_an_item_goes_to_one_bucket():
    row = {"image_id": "ab" * 16, "uri": "s3://a/1.jpg"}
    assert {bucket_of(dict(row, uri=f"s3://a/{i}.jpg"), 16) for i in range(20)} == {bucket_of(row, 16)}
    reject = {"image_id": "", "uri": "s3://a/broken.jpg"}  # rejects have no content id: keyed by uri
    assert bucket_of(reject, 16) == bucket_of(dict(reject), 16)
    assert len({bucket_of({"image_id": f"{i:032x}", "uri": ""}, 8) for i in range(200)}) == 8


@pytest.mark.ray
def test_finalize_on_ray_writes_what_the_whole_pool_selects(ray_local, tmp_path):
    """The same passes as parallel Ray tasks (the label stage's mapper)."""
    from ssl_ray.stages.finalize import ray_mapper

    raw = raw_pool(300, seed=11)
    stage = write_raw(raw, tmp_path)
    select_cfg = SelectConfig(conf=0.5, negative_max_score=0.1, max_images_per_class=15, review_max=10)
    cfg = Config(label=LabelConfig(finalize_rows=40), select=select_cfg)
    summary = finalize(cfg, stage, NAMES, 1, "t.pt", None, 300, None, ray_mapper(cfg))
    assert summary["finalize_tasks"] == 9 and not (tmp_path / "scatter").exists()
    assert outputs(tmp_path, summary) == whole(raw, select_cfg, select_cfg.conf)
