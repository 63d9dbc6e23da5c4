"""`select.ambiguous_images: mask`: which detections become ignore regions, how they are painted
out of the training image, and how the YOLO tree writes such an image."""

import io

import numpy as np
import pytest
from PIL import Image

from ssl_ray import schema
from ssl_ray.boxes import PAD_VALUE, paint_out, pixel_window
from ssl_ray.config import SelectConfig
from ssl_ray.export import ImageCache, write_yolo_tree
from ssl_ray.select import class_thresholds, classify, ignore_regions, select, selected_row

NAMES = ["car", "person", "bike"]


def B(cls, score, x=0.5, y=0.5, w=0.2, h=0.2):
    return schema.box(cls, x, y, w, h, score)


def row(*boxes, image_id="0" * 32, w=100, h=100):
    return schema.make_row(image_id=image_id, uri=f"u/{image_id}", width=w, height=h, source=None, round=0,
                           boxes=boxes, teacher="t")


@pytest.mark.parametrize("box, width, height, window", [
    (B(0, 1, 0.5, 0.5, 0.5, 0.5), 100, 100, (25, 25, 75, 75)),
    (B(0, 1, 0.5, 0.5, 0.101, 0.1), 100, 50, (44, 22, 56, 28)),      # fractional edges round outward
    (B(0, 1, 0.05, 0.95, 0.2, 0.2), 100, 100, (0, 85, 15, 100)),     # clipped at the image's edges
    (B(0, 1, 0.5, 0.5, 0.0, 0.0), 10, 10, (5, 5, 5, 5)),             # empty: paints nothing
])
def test_pixel_window(box, width, height, window):
    assert pixel_window(box, width, height) == window


def test_paint_out_fills_regions_but_never_a_kept_box():
    image = np.full((20, 40, 3), 7, np.uint8)
    region = B(1, 0.3, x=0.5, y=0.5, w=1.0, h=1.0)                # the whole image
    keep = B(0, 0.9, x=0.25, y=0.5, w=0.5, h=0.5)                 # columns 0..20, rows 5..15
    out = paint_out(image, [region], [keep])
    assert (out[5:15, 0:20] == 7).all()                            # the kept object is untouched
    assert (out[0:5] == PAD_VALUE).all() and (out[:, 20:] == PAD_VALUE).all()
    assert (image == 7).all()                                      # a copy: the input is not changed
    assert (paint_out(image, [], [keep]) == image).all()


CFG = SelectConfig(conf=0.8, negative_max_score=0.2, ambiguous_images="mask")


@pytest.mark.parametrize("boxes, outcome, n_kept, n_ignored", [
    ([B(0, 0.9)], "pseudo", 1, 0),
    ([B(0, 0.9), B(1, 0.1, x=0.1)], "pseudo", 1, 0),        # below negative_max_score: background
    ([B(0, 0.9), B(1, 0.2, x=0.1)], "pseudo", 1, 1),        # at it: a possible object, painted out
    ([B(0, 0.9), B(1, 0.5, x=0.52)], "pseudo", 1, 0),       # the kept box's duplicate (other class)
    ([B(0, 0.9), B(1, 0.5, x=0.65)], "pseudo", 1, 1),       # overlapping it less (IoU 0.14): another object
    ([B(0, 0.9), B(1, 0.9, w=0.03, h=0.03, x=0.1)], "pseudo", 1, 1),  # confident but too small to keep
    ([B(0, 0.5)], "uncertain", 1, 0),                       # not trained on: nothing to mask
])
def test_ignore_regions_of_a_pseudo_labeled_image(boxes, outcome, n_kept, n_ignored):
    got, kept, _ = classify(row(*boxes), CFG, class_thresholds(CFG, NAMES))
    sel = selected_row(row(*boxes), got, kept, CFG, round=1)
    assert (got, len(sel["boxes"]), len(sel["ignore"] or [])) == (outcome, n_kept, n_ignored)
    assert sel["ignore"] is None or all(b["score"] >= CFG.negative_max_score for b in sel["ignore"])


@pytest.mark.parametrize("mode", ["train", "review"])
def test_other_modes_record_no_ignore_regions(mode):
    cfg = SelectConfig(conf=0.8, negative_max_score=0.2, ambiguous_images=mode)
    chosen = select([row(B(0, 0.9), B(1, 0.5, x=0.1))], cfg, NAMES, round=1)
    assert [r["ignore"] for r in chosen.pseudo + chosen.uncertain] == [None]


def test_select_masks_what_train_would_teach_as_background():
    rows = [row(B(0, 0.9), B(1, 0.5, x=0.1), image_id="a" * 32), row(B(0, 0.9), image_id="b" * 32)]
    train = select(rows, SelectConfig(conf=0.8, negative_max_score=0.2), NAMES, round=1)
    mask = select(rows, CFG, NAMES, round=1)
    assert [r["boxes"] for r in mask.pseudo] == [r["boxes"] for r in train.pseudo]  # the same labels
    assert [len(r["ignore"] or []) for r in mask.pseudo] == [1, 0]
    assert ignore_regions(rows[0]["boxes"], [], 0.2) == rows[0]["boxes"]  # nothing kept: every possible object


def jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=100)
    return buf.getvalue()


def test_yolo_tree_writes_a_masked_copy_and_leaves_the_cache_alone(tmp_path):
    data = jpeg(np.full((40, 80, 3), 200, np.uint8))
    image_id = schema.image_id_of_bytes(data)
    boxes = [B(0, 0.9, x=0.25, y=0.5, w=0.2, h=0.4), B(1, 0.3, x=0.75, y=0.5, w=0.2, h=0.4)]
    pseudo = selected_row(row(*boxes, image_id=image_id, w=80, h=40), "pseudo", boxes[:1], CFG, round=1)
    cache = ImageCache(tmp_path / "cache")
    write_yolo_tree(tmp_path / "yolo", {"train": [pseudo]}, NAMES, cache, lambda r: data)
    images, labels = tmp_path / "yolo" / "images" / "train", tmp_path / "yolo" / "labels" / "train"
    assert [p.name for p in images.iterdir()] == [f"{image_id}~masked.jpg"]
    assert (labels / f"{image_id}~masked.txt").read_text().startswith("0 0.250000")  # the kept box only
    painted = np.asarray(Image.open(images / f"{image_id}~masked.jpg"))
    assert abs(int(painted[20, 60, 0]) - PAD_VALUE) <= 2 and abs(int(painted[20, 20, 0]) - 200) <= 2
    cached = cache.ensure(image_id, lambda: b"")
    assert cached.read_bytes() == data                        # never written through a hard link
    # The same tree rewritten without masking holds the plain image, and no masked copy.
    write_yolo_tree(tmp_path / "yolo", {"train": [{**pseudo, "ignore": None}]}, NAMES, cache, lambda r: data)
    assert [p.name for p in images.iterdir()] == [f"{image_id}.jpg"]
    assert (images / f"{image_id}.jpg").read_bytes() == data


def test_a_png_is_masked_as_a_png(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.full((10, 10, 3), 50, np.uint8)).save(buf, format="PNG")
    data = buf.getvalue()
    image_id = schema.image_id_of_bytes(data)
    pseudo = {**row(B(0, 0.9, x=0.2, w=0.2, h=0.2), image_id=image_id, w=10, h=10), "source": "pseudo",
              "ignore": [B(1, 0.4, x=0.7, y=0.7, w=0.2, h=0.2)]}
    write_yolo_tree(tmp_path / "yolo", {"train": [pseudo]}, NAMES, ImageCache(tmp_path / "cache"), lambda r: data)
    painted = np.asarray(Image.open(tmp_path / "yolo" / "images" / "train" / f"{image_id}~masked.png"))
    assert (painted[6:8, 6:8] == PAD_VALUE).all() and (painted[0:2, 0:2] == 50).all()  # lossless
