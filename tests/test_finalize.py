"""Bucketed finalize (pure steps, no Ray) against `select.select` over the whole pool at once:
every bucket count gives the same predictions, rejects, outcomes, caps and review order."""

import random

import numpy as np
import pytest

from ssl_ray import accounting
from ssl_ray.config import SelectConfig
from ssl_ray.finalize import bucket_of, classify_bucket, cutoffs, dedupe_bucket, keep_bucket
from ssl_ray.select import class_thresholds, select
from ssl_ray.thresholds import quantile_thresholds, thresholds_from_scores

NAMES = ["car", "person", "bike"]


def raw_pool(n: int, seed: int) -> list[dict]:
    """n items (some rejected, some sharing content), then retried copies of a fifth of them."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        uri = f"s3://pool/img_{i:05d}.jpg"
        if rng.random() < 0.05:
            rows.append({"image_id": "", "uri": uri, "width": 0, "height": 0, "boxes": [], "reject_reason": "corrupt",
                         "reject_detail": "truncated"})
            continue
        boxes = [{"cls": rng.randrange(3), "x": 0.5, "y": 0.5, "w": rng.choice([0.002, 0.1, 0.3]),
                  "h": 0.2, "score": float(np.float32(rng.random())), "agree": rng.choice([None, 0.0, 1.0])}
                 for _ in range(rng.choice([0, 0, 1, 2, 5]))]  # scores as Parquet's float32 holds them
        content = i if rng.random() > 0.03 else rng.randrange(max(1, i))  # a few duplicates of earlier content
        rows.append({"image_id": f"{content:032x}", "uri": uri, "width": 640, "height": 480, "boxes": boxes,
                     "video_uri": None, "frame_index": None, "timestamp_s": None, "reject_reason": "",
                     "reject_detail": ""})
    rows += [dict(r) for r in rng.sample(rows, n // 5)]  # Ray's retried blocks
    rng.shuffle(rows)
    return rows


def bucketed(raw: list[dict], cfg: SelectConfig, buckets: int, conf: float, quantile: bool):
    """The finalize passes of `finalize.finalize`, in process."""
    parts = [[r for r in raw if bucket_of(r, buckets) == k] for k in range(buckets)]
    floor = cfg.adaptive_floor if quantile else None
    firsts = [dedupe_bucket(p, 1, "t.pt", len(NAMES), floor) for p in parts]
    class_conf = None
    if quantile:
        scores = [[s for _, _, stats in firsts for s in stats["scores"][c]] for c in range(len(NAMES))]
        class_conf = thresholds_from_scores(scores, cfg.keep_fraction, conf, cfg.adaptive_floor)
    thresholds = class_thresholds(cfg, NAMES, conf, class_conf)
    seconds = [classify_bucket(preds, cfg, thresholds, 1) for preds, _, _ in firsts]
    cut = cutoffs([cand for _, cand in seconds], cfg)
    thirds = [keep_bucket(selection, cut, cfg, thresholds) for selection, _ in seconds]
    return {
        "preds": sorted(p["image_id"] for preds, _, _ in firsts for p in preds),
        "rejects": sorted((r["uri"], r["reason"]) for _, rejects, _ in firsts for r in rejects),
        "retries": sum(stats["retried_copies_dropped"] for _, _, stats in firsts),
        "outcomes": sorted((r["image_id"], r["source"], len(r["boxes"]), len(r["ignore"] or []))
                           for sel, _ in seconds for r in sel),
        "training": sorted(r["image_id"] for training, _ in thirds for r in training),
        "review": [row["image_id"] for _, row in sorted((t for _, review in thirds for t in review),
                                                         key=lambda t: t[0])],
        "thresholds": thresholds, "pseudo_used": cut.pseudo_used, "negative_used": cut.negative_used,
    }


def whole(raw: list[dict], cfg: SelectConfig, conf: float, quantile: bool):
    preds, rejects, retries = accounting.dedupe(raw, 1, "t.pt")
    class_conf = quantile_thresholds(preds, len(NAMES), cfg.keep_fraction, conf, cfg.adaptive_floor) if quantile else None
    chosen = select(preds, cfg, NAMES, round=1, conf=conf, class_conf=class_conf)
    return {
        "preds": sorted(p["image_id"] for p in preds),
        "rejects": sorted((r["uri"], r["reason"]) for r in rejects),
        "retries": retries,
        "outcomes": sorted((r["image_id"], r["source"], len(r["boxes"]), len(r["ignore"] or []))
                           for r in chosen.pseudo + chosen.negative + chosen.uncertain),
        "training": sorted(r["image_id"] for r in chosen.training),
        "review": [r["image_id"] for r in chosen.uncertain[: cfg.review_max]],
        "thresholds": chosen.thresholds, "pseudo_used": len(chosen.pseudo_used),
        "negative_used": len(chosen.negatives_used),
    }


@pytest.mark.parametrize("cfg, quantile", [
    (SelectConfig(conf=0.5, negative_max_score=0.1), False),  # the defaults' shape: no class cap
    (SelectConfig(conf=0.6, negative_max_score=0.2, max_images_per_class=7, review_max=5), False),
    (SelectConfig(conf=0.4, negative_max_score=0.3, max_images_per_class=1, max_negative_fraction=0.0), False),
    (SelectConfig(conf=0.7, negative_max_score=0.5, max_negative_fraction=1.0, review_max=0), False),
    (SelectConfig(conf=0.5, negative_max_score=0.1, min_agreement=1.0, ambiguous_images="review",
                  per_class={"bike": 0.9}, max_boxes=1), False),
    (SelectConfig(conf=0.5, negative_max_score=0.1, ambiguous_images="mask", max_boxes=1), False),
    (SelectConfig(conf=0.5, negative_max_score=0.1, adaptive="pool_quantile", keep_fraction=0.2,
                  max_images_per_class=20), True),
])
@pytest.mark.parametrize("buckets", [1, 3, 8])
def test_buckets_select_what_the_whole_pool_selects(cfg, quantile, buckets):
    raw = raw_pool(400, seed=buckets)
    expected = whole(raw, cfg, cfg.conf, quantile)
    got = bucketed(raw, cfg, buckets, cfg.conf, quantile)
    assert got == expected
    assert expected["retries"] > 0 and any(reason == "duplicate" for _, reason in expected["rejects"])


def test_every_copy_of_an_item_goes_to_one_bucket():
    row = {"image_id": "ab" * 16, "uri": "s3://a/1.jpg"}
    assert {bucket_of(dict(row, uri=f"s3://a/{i}.jpg"), 16) for i in range(20)} == {bucket_of(row, 16)}
    reject = {"image_id": "", "uri": "s3://a/broken.jpg"}  # rejects have no content id: keyed by uri
    assert bucket_of(reject, 16) == bucket_of(dict(reject), 16)
    assert len({bucket_of({"image_id": f"{i:032x}", "uri": ""}, 8) for i in range(200)}) == 8


@pytest.mark.ray
def test_finalize_on_ray_writes_what_the_whole_pool_selects(ray_local, tmp_path):
    """The Ray side: raw Parquet in several files -> scatter -> three passes -> outputs, with
    pool-quantile thresholds gathered from every bucket, against the whole-pool reference."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ssl_ray.config import Config, LabelConfig
    from ssl_ray.finalize import finalize
    from ssl_ray.label import RAW_SCHEMA, round_
    from ssl_ray.storage import Store

    raw = raw_pool(300, seed=11)
    (tmp_path / "raw").mkdir()
    for i in range(0, len(raw), 70):
        pq.write_table(pa.Table.from_pylist(raw[i:i + 70], schema=RAW_SCHEMA), tmp_path / "raw" / f"p{i:04d}.parquet")
    select_cfg = SelectConfig(conf=0.5, negative_max_score=0.1, adaptive="pool_quantile", keep_fraction=0.3,
                              max_images_per_class=15, review_max=10)
    cfg = Config(label=LabelConfig(finalize_rows=40), select=select_cfg)
    stage = Store(str(tmp_path))
    summary = finalize(cfg, stage, NAMES, 1, "t.pt", None, 300, None)
    expected = whole(raw, select_cfg, select_cfg.conf, quantile=True)
    read = lambda rel: pq.read_table(tmp_path / rel).to_pylist()  # noqa: E731
    assert summary["finalize_tasks"] == 9 and not (tmp_path / "scatter").exists()
    assert summary["class_thresholds"] == {n: round_(t) for n, t in zip(NAMES, expected["thresholds"])}
    assert sorted(p["image_id"] for p in read("predictions")) == expected["preds"]
    assert sorted(r["image_id"] for r in read("pseudo")) == expected["training"]
    assert [r["image_id"] for r in read("review/part-000000.parquet")] == expected["review"]
    assert (summary["pseudo_used"], summary["negative_used"]) == (expected["pseudo_used"], expected["negative_used"])
    assert summary["items"] == len(expected["preds"]) + len(expected["rejects"])
