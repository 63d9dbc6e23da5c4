"""The learned box refiner: its coordinate frames, augmentation, training, and the stage that
feeds it letterboxed labeled images."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_ray.adapters.refiner import (
    BoxRefiner,
    _augment,
    _canvases,
    _crops,
    _jitter,
    crop_windows,
    decode,
    encode,
    jitter_check,
)
from ssl_ray.config import RefineConfig
from ssl_ray.core.detections import Detections
from ssl_ray.stages.refine import refine_detections


def rectangles(n: int, size: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Canvases with one to three solid rectangles on noise, and their exact xyxy boxes
    (whole pixels: the drawn extent is the box)."""
    rng = np.random.default_rng(seed)
    images, boxes = [], []
    for _ in range(n):
        image = rng.normal(100, 10, (size, size, 3)).clip(0, 255).astype(np.uint8)
        found = []
        for _ in range(rng.integers(1, 4)):
            w, h = rng.integers(size // 8, size // 3, 2)
            x0, y0 = rng.integers(2, size - w - 2), rng.integers(2, size - h - 2)
            image[y0 : y0 + h, x0 : x0 + w] = rng.integers(170, 256, 3)
            found.append([x0, y0, x0 + w, y0 + h])
        images.append(image)
        boxes.append(np.array(found, float))
    return images, boxes


@pytest.mark.parametrize(
    "box, context, window",
    [
        ([10, 10, 20, 20], 1.0, [10, 10, 20, 20]),
        ([10, 10, 20, 20], 2.0, [5, 5, 25, 25]),
        ([0, 0, 10, 4], 1.5, [-2.5, -1, 12.5, 5]),
        ([5, 5, 5, 5], 2.0, [4, 4, 6, 6]),  # a degenerate box still gets a window of at least a pixel
    ],
)
def test_crop_windows(box, context, window):
    np.testing.assert_allclose(crop_windows(np.array([box], float), context), [window])


@pytest.mark.parametrize(
    "window, target, fractions",
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 1, 1]),
        ([0, 0, 10, 20], [2, 5, 8, 15], [0.2, 0.25, 0.8, 0.75]),
        ([10, 10, 20, 20], [5, 12, 25, 18], [-0.5, 0.2, 1.5, 0.8]),  # edges may lie outside the window
    ],
)
def test_encode_decode(window, target, fractions):
    w, t = np.array([window], float), np.array([target], float)
    np.testing.assert_allclose(encode(w, t), [fractions])
    np.testing.assert_allclose(decode(w, encode(w, t)), t)


def test_jitter_moves_each_edge_within_its_bound_and_keeps_boxes_ordered():
    rng = np.random.default_rng(0)
    boxes = np.tile([10.0, 20.0, 30.0, 60.0], (2000, 1))
    moved = _jitter(boxes, 0.1, rng)
    assert (moved[:, 2:] > moved[:, :2]).all()
    shift = np.abs(moved - boxes) / np.tile([20.0, 40.0], 2)
    assert shift.max() <= 0.1 + 1e-9 and shift.mean() > 0.02  # moved, by at most 10 % of the side


def test_augmented_crops_and_targets_move_together():
    """Whatever symmetry a crop gets, its target still names the rectangle's edges in it."""
    import torch

    images, boxes = rectangles(12, 64, seed=1)
    for image in images:  # one bright rectangle on a flat background: its extent is measurable
        image[:] = 60
    for image, b in zip(images, boxes):
        x0, y0, x1, y1 = b[0].astype(int)
        image[y0:y1, x0:x1] = 250
    truth = np.array([b[0] for b in boxes])
    windows = crop_windows(truth + np.random.default_rng(2).uniform(-2, 2, truth.shape), 1.6)
    crop = 32
    x = _crops(_canvases(images, "cpu"), np.arange(12), windows, crop)
    x, y = _augment(x, encode(windows, truth), np.random.default_rng(3))
    assert isinstance(x, torch.Tensor) and x.shape == (12, 3, crop, crop)
    for pixels, target in zip(x.numpy(), y):
        bright = pixels.mean(0) > 155 / 255
        cols, rows = np.flatnonzero(bright.any(0)), np.flatnonzero(bright.any(1))
        measured = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]) / crop
        np.testing.assert_allclose(measured, target, atol=1.5 / crop)


def test_refiner_learns_to_tighten_boxes_it_has_not_seen():
    """Trained on jittered rectangles, it brings held-out jittered boxes closer to the truth."""
    cfg = RefineConfig(crop=24, steps=200, batch=32, blend=1.0, passes=1)
    images, boxes = rectangles(30, 64, seed=0)
    refiner = BoxRefiner.fit(images, boxes, cfg, lr=3e-3, jitter=0.15)
    check = jitter_check(refiner, *rectangles(20, 64, seed=9), seed=1, jitter=0.15)
    assert check["boxes"] >= 20
    assert check["refined_median_iou"] > check["jittered_median_iou"] + 0.08, check  # measured 0.823 -> 0.945


def test_refine_detections_moves_only_confident_boxes_and_keeps_scores_and_classes():
    images, _ = rectangles(2, 48, seed=4)
    dets = [Detections.from_array([[5, 5, 20, 20, 0.9, 2], [10, 10, 30, 30, 0.05, 1]]), Detections.empty()]
    refiner = BoxRefiner(RefineConfig(crop=16, blend=1.0, min_score=0.1))
    out = refine_detections(refiner, np.stack(images), dets)
    assert len(out[0]) == 2 and len(out[1]) == 0
    np.testing.assert_array_equal(out[0].score, dets[0].score)
    np.testing.assert_array_equal(out[0].cls, dets[0].cls)
    np.testing.assert_array_equal(out[0].xyxy[1], dets[0].xyxy[1])  # below min_score: untouched
    assert not np.array_equal(out[0].xyxy[0], dets[0].xyxy[0])  # an untrained net still moves it
    assert ((out[0].xyxy >= 0) & (out[0].xyxy <= 48)).all()  # clipped to the canvas
    keep = BoxRefiner(RefineConfig(crop=16, blend=0.0, min_score=0.1), refiner.net.state_dict())
    np.testing.assert_array_equal(refine_detections(keep, np.stack(images), dets)[0].xyxy, dets[0].xyxy)


def test_state_round_trip_gives_the_same_boxes():
    import io

    import torch

    images, boxes = rectangles(4, 48, seed=5)
    cfg = RefineConfig(crop=16, steps=5, batch=8, passes=2)
    refiner = BoxRefiner.fit(images, boxes, cfg)
    buffer = io.BytesIO()
    torch.save(refiner.state(), buffer)
    again = BoxRefiner.from_state(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True), cfg)
    assert again.cfg == refiner.cfg
    for a, b in zip(refiner(images, boxes), again(images, boxes)):
        np.testing.assert_array_equal(a, b)


def test_fit_refuses_no_boxes_and_mixed_canvas_sizes():
    with pytest.raises(ValueError, match="at least one labeled box"):
        BoxRefiner.fit([np.zeros((32, 32, 3), np.uint8)], [np.zeros((0, 4))], RefineConfig(steps=1))
    with pytest.raises(ValueError, match="same-size canvases"):
        BoxRefiner.fit(
            [np.zeros((32, 32, 3), np.uint8), np.zeros((16, 16, 3), np.uint8)],
            [np.array([[1, 1, 9, 9.0]]), np.array([[1, 1, 9, 9.0]])],
            RefineConfig(steps=1),
        )


def test_labeled_canvases_letterbox_images_and_boxes_alike(tmp_path):
    """A wide image's rectangle lands where the letterboxed canvas shows it."""
    from PIL import Image

    from ssl_ray.config import load_config
    from ssl_ray.stages.refine import labeled_canvases

    image = np.full((40, 80, 3), 50, np.uint8)
    image[10:30, 20:40] = 240  # x 20..40, y 10..30 of 80 x 40
    Image.fromarray(image).save(tmp_path / "wide.png")
    Image.fromarray(image).save(tmp_path / "empty.png")
    box = {"cls": 0, "x": 30 / 80, "y": 20 / 40, "w": 20 / 80, "h": 20 / 40}
    rows = [{"uri": str(tmp_path / "wide.png"), "boxes": [box]}, {"uri": str(tmp_path / "empty.png"), "boxes": []}]
    cfg = load_config(None, ["model.imgsz=64"])
    images, boxes = labeled_canvases(cfg, rows)
    assert len(images) == 1 and images[0].shape == (64, 64, 3)  # the image without boxes is skipped
    np.testing.assert_allclose(boxes[0], [[16, 24, 32, 40]])  # scale 0.8, 16 px of padding on top
    bright = images[0].mean(2) > 200
    cols, rows_ = np.flatnonzero(bright.any(0)), np.flatnonzero(bright.any(1))
    assert abs(cols[0] - 16) <= 1 and abs(cols[-1] + 1 - 32) <= 1 and abs(rows_[0] - 24) <= 1

    few = load_config(None, ["model.imgsz=64", "refine.max_images=1"])
    rows = [rows[0], {**rows[0], "uri": str(tmp_path / "wide.png")}]
    assert len(labeled_canvases(few, rows)[0]) == 1


def test_loaded_refiner_is_applied_as_the_running_config_says(tmp_path):
    """A refiner trained with one pass, loaded by a run configured for two passes and another
    blend: the run's application settings win; the network's shape (crop) is the saved one."""
    import torch

    from ssl_ray.config import load_config
    from ssl_ray.stages.refine import load_refiner

    images, boxes = rectangles(2, 48, seed=5)
    trained = BoxRefiner.fit(images, boxes, RefineConfig(crop=16, steps=2, batch=4, passes=1))
    torch.save(trained.state(), tmp_path / "refiner.pt")
    cfg = load_config(None, ["refine.passes=2", "refine.blend=1.0", "refine.min_score=0.3"])
    applied = load_refiner(str(tmp_path / "refiner.pt"), cfg.storage, "cpu", cfg.refine)
    assert (applied.cfg.passes, applied.cfg.blend, applied.cfg.min_score, applied.cfg.crop) == (2, 1.0, 0.3, 16)
