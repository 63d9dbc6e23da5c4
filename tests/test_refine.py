"""The learned box refiner: its coordinate frames, augmentation, training, and the stage that
feeds it letterboxed labeled images."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_ray.refine import (BoxRefiner, RefineSpec, _augment, _crops, _canvases, _jitter, crop_windows, decode,
                            encode, jitter_check)
from ssl_ray.refine_stage import refine_detections


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
            image[y0:y0 + h, x0:x0 + w] = rng.integers(170, 256, 3)
            found.append([x0, y0, x0 + w, y0 + h])
        images.append(image)
        boxes.append(np.array(found, float))
    return images, boxes


@pytest.mark.parametrize("box, context, window", [
    ([10, 10, 20, 20], 1.0, [10, 10, 20, 20]),
    ([10, 10, 20, 20], 2.0, [5, 5, 25, 25]),
    ([0, 0, 10, 4], 1.5, [-2.5, -1, 12.5, 5]),
    ([5, 5, 5, 5], 2.0, [4, 4, 6, 6]),  # a degenerate box still gets a window of at least a pixel
])
def test_crop_windows(box, context, window):
    np.testing.assert_allclose(crop_windows(np.array([box], float), context), [window])


@pytest.mark.parametrize("window, target, fractions", [
    ([0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 1, 1]),
    ([0, 0, 10, 20], [2, 5, 8, 15], [0.2, 0.25, 0.8, 0.75]),
    ([10, 10, 20, 20], [5, 12, 25, 18], [-0.5, 0.2, 1.5, 0.8]),  # edges may lie outside the window
])
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


@pytest.mark.parametrize("flips", ["h", "hv"])
def test_augmented_crops_and_targets_move_together(flips):
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
    x, y = _augment(x, encode(windows, truth), flips, np.random.default_rng(3))
    assert isinstance(x, torch.Tensor) and x.shape == (12, 3, crop, crop)
    for pixels, target in zip(x.numpy(), y):
        bright = pixels.mean(0) > 155 / 255
        cols, rows = np.flatnonzero(bright.any(0)), np.flatnonzero(bright.any(1))
        measured = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]) / crop
        np.testing.assert_allclose(measured, target, atol=1.5 / crop)


def extent(crops):
    """A net that is exactly equivariant: the bright pixels' extent in each crop, as fractions."""
    import torch

    bright = crops.mean(1) > 155 / 255  # (N, S, S)
    size = crops.shape[-1]
    out = []
    for b in bright.numpy():
        cols, rows = np.flatnonzero(b.any(0)), np.flatnonzero(b.any(1))
        out.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
    return torch.tensor(out, dtype=torch.float32) / size


@pytest.mark.parametrize("tta", ["h", "hv"])
def test_tta_maps_each_symmetric_answer_back(tta):
    """An equivariant net answers the same with and without averaging over symmetries: every
    transformed crop's edges are mapped back to the original crop before the mean."""
    images, boxes = rectangles(6, 64, seed=1)
    for image, b in zip(images, boxes):
        image[:] = 60
        x0, y0, x1, y1 = b[0].astype(int)
        image[y0:y1, x0:x1] = 250
    start = [b[:1] + np.random.default_rng(i).uniform(-2, 2, (1, 4)) for i, b in enumerate(boxes)]
    plain, averaged = BoxRefiner(RefineSpec(crop=32, blend=1.0)), BoxRefiner(RefineSpec(crop=32, blend=1.0, tta=tta))
    plain.net = averaged.net = extent
    for a, b, truth in zip(plain(images, start), averaged(images, start), boxes):
        np.testing.assert_allclose(a, b, atol=1e-9)
        np.testing.assert_allclose(a, truth[:1], atol=1.5)  # and it found the rectangle


@pytest.mark.parametrize("tta, expected", [
    ("none", [0.1, 0.2, 0.7, 0.9]),
    ("h", [0.2, 0.2, 0.8, 0.9]),  # the mirror reads x1 = 1 - 0.7 and x2 = 1 - 0.1
    # all 8: each edge averaged over its reading from every side: x1 = y1 = (0.1 + 0.2 + 0.3 + 0.1) / 4
    ("hv", [0.175, 0.175, 0.825, 0.825]),
])
def test_tta_averages_a_biased_net(tta, expected):
    """A net that ignores the crop and always answers the same: averaging over symmetries
    cancels its asymmetries, as the table says."""
    import torch

    refiner = BoxRefiner(RefineSpec(crop=8, tta=tta))
    refiner.net = lambda x: torch.tensor([[0.1, 0.2, 0.7, 0.9]]).repeat(len(x), 1)
    edges, spread = refiner._edges(torch.zeros(3, 3, 8, 8))
    np.testing.assert_allclose(edges, [expected] * 3, atol=1e-12)
    assert spread is None


@pytest.mark.parametrize("tta", ["none", "h", "hv"])
def test_spread_is_how_far_the_eight_symmetries_disagree_whatever_the_tta(tta):
    """The biased net reads each edge as 0.1, 0.3, 0.2 and 0.1 (x1, from the four sides, each
    twice over the eight symmetries): std 0.0829 of the window, 1.6 box sides wide; the box
    itself still comes from `tta`'s views alone."""
    import torch

    refiner = BoxRefiner(RefineSpec(crop=8, tta=tta, context=1.6))
    refiner.net = lambda x: torch.tensor([[0.1, 0.2, 0.7, 0.9]]).repeat(len(x), 1)
    edges, spread = refiner._edges(torch.zeros(2, 3, 8, 8), spread=True)
    np.testing.assert_allclose(edges, refiner._edges(torch.zeros(2, 3, 8, 8))[0], atol=1e-12)
    np.testing.assert_allclose(spread, [np.std([0.1, 0.3, 0.2, 0.1]) * 1.6] * 2, atol=1e-12)


def test_an_equivariant_net_has_no_spread():
    """A net that finds the rectangle from every side agrees with itself: spread ~0; boxes
    are the same with and without asking for the spread."""
    images, boxes = rectangles(3, 64, seed=2)
    for image, b in zip(images, boxes):
        image[:] = 60
        x0, y0, x1, y1 = b[0].astype(int)
        image[y0:y1, x0:x1] = 250
    start = [b[:1] + 1.0 for b in boxes]
    refiner = BoxRefiner(RefineSpec(crop=32, blend=1.0, passes=2))
    refiner.net = extent
    moved, spreads = refiner.refine(images, start, spread=True)
    assert [s.shape for s in spreads] == [(1,)] * 3
    assert max(float(s[0]) for s in spreads) < 0.02, spreads
    for a, b in zip(moved, refiner(images, start)):
        np.testing.assert_allclose(a, b, atol=1e-12)
    _, none = refiner.refine(images, [np.zeros((0, 4))] * 3, spread=True)
    assert [s.shape for s in none] == [(0,)] * 3


def test_refiner_learns_to_tighten_boxes_it_has_not_seen():
    """Trained on jittered rectangles, it brings held-out jittered boxes closer to the truth."""
    spec = RefineSpec(crop=24, steps=200, batch=32, lr=3e-3, blend=1.0, jitter=0.15)
    images, boxes = rectangles(30, 64, seed=0)
    refiner = BoxRefiner.fit(images, boxes, spec)
    check = jitter_check(refiner, *rectangles(20, 64, seed=9), seed=1)
    assert check["boxes"] >= 20
    assert check["refined_median_iou"] > check["jittered_median_iou"] + 0.08, check  # measured 0.823 -> 0.945


def test_refine_detections_moves_only_confident_boxes_and_keeps_scores_and_classes():
    images, _ = rectangles(2, 48, seed=4)
    dets = [np.array([[5, 5, 20, 20, 0.9, 2], [10, 10, 30, 30, 0.05, 1]], float), np.zeros((0, 6))]
    refiner = BoxRefiner(RefineSpec(crop=16, blend=1.0, min_score=0.1))
    out, spread = refine_detections(refiner, np.stack(images), dets, spread=True)
    assert out[0].shape == (2, 6) and out[1].shape == (0, 6)
    assert spread[0][0] >= 0 and np.isnan(spread[0][1]) and spread[1].shape == (0,)  # NaN: not refined
    np.testing.assert_array_equal(out[0][:, 4:], dets[0][:, 4:])
    np.testing.assert_array_equal(out[0][1], dets[0][1])  # below min_score: untouched
    assert not np.array_equal(out[0][0, :4], dets[0][0, :4])  # an untrained net still moves it
    assert ((out[0][:, :4] >= 0) & (out[0][:, :4] <= 48)).all()  # clipped to the canvas
    keep = BoxRefiner(RefineSpec(crop=16, blend=0.0, min_score=0.1), refiner.net.state_dict())
    moved, spread = refine_detections(keep, np.stack(images), dets)
    np.testing.assert_array_equal(moved[0], dets[0])
    assert spread is None


def test_state_round_trip_gives_the_same_boxes():
    import io

    import torch

    images, boxes = rectangles(4, 48, seed=5)
    refiner = BoxRefiner.fit(images, boxes, RefineSpec(crop=16, steps=5, batch=8, passes=2))
    buffer = io.BytesIO()
    torch.save(refiner.state(), buffer)
    again = BoxRefiner.from_state(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert again.spec == refiner.spec
    for a, b in zip(refiner(images, boxes), again(images, boxes)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, message", [
    ({"crop": 4}, "crop"),
    ({"context": 0.5}, "context"),
    ({"jitter": 0.0}, "jitter"),
    ({"flips": "v"}, "flips"),
    ({"passes": 0}, "passes"),
    ({"blend": 1.5}, "blend"),
    ({"min_score": -0.1}, "min_score"),
    ({"tta": "v"}, "tta"),
])
def test_spec_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RefineSpec(**kwargs)


def test_fit_refuses_no_boxes_and_mixed_canvas_sizes():
    with pytest.raises(ValueError, match="at least one labeled box"):
        BoxRefiner.fit([np.zeros((32, 32, 3), np.uint8)], [np.zeros((0, 4))], RefineSpec(steps=1))
    with pytest.raises(ValueError, match="same-size canvases"):
        BoxRefiner.fit([np.zeros((32, 32, 3), np.uint8), np.zeros((16, 16, 3), np.uint8)],
                       [np.array([[1, 1, 9, 9.0]]), np.array([[1, 1, 9, 9.0]])], RefineSpec(steps=1))


def test_labeled_canvases_letterbox_images_and_boxes_alike(tmp_path):
    """A wide image's rectangle lands where the letterboxed canvas shows it."""
    from PIL import Image

    from ssl_ray.config import load_config
    from ssl_ray.refine_stage import labeled_canvases

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
    """A refiner trained with one pass and no tta, loaded by a run configured for two passes
    and tta: the run's application settings win; its training settings are the saved ones."""
    import torch

    from ssl_ray.config import load_config
    from ssl_ray.refine_stage import load_refiner

    images, boxes = rectangles(2, 48, seed=5)
    trained = BoxRefiner.fit(images, boxes, RefineSpec(crop=16, steps=2, batch=4, jitter=0.1))
    torch.save(trained.state(), tmp_path / "refiner.pt")
    cfg = load_config(None, ["refine.passes=2", "refine.tta=hv", "refine.blend=1.0", "refine.min_score=0.3"])
    as_saved = load_refiner(str(tmp_path / "refiner.pt"), cfg.storage)
    applied = load_refiner(str(tmp_path / "refiner.pt"), cfg.storage, apply=cfg.refine)
    assert as_saved.spec == trained.spec
    assert (applied.spec.passes, applied.spec.tta, applied.spec.blend, applied.spec.min_score) == (2, "hv", 1.0, 0.3)
    assert (applied.spec.crop, applied.spec.jitter, applied.spec.steps) == (16, 0.1, 2)
