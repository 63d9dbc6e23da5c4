"""train.pseudo_box_weight: the mark on pseudo-labeled boxes survives Ultralytics' augmentation,
and the loss scales exactly those boxes' box losses, nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_ray.export import tree_image_id
from ssl_ray.ray_trainer import PSEUDO_MARK, mark_pseudo_boxes


@pytest.mark.parametrize("path, key", [
    ("/t/images/train/ab12.jpg", "ab12"),
    ("/t/images/train/ab12~masked.png", "ab12"),
    ("/t/images/train/ab12~3.jpg", "ab12"),
    ("/t/images/train/ab12~masked~2.jpg", "ab12"),
    ("ab12", "ab12"),
])
def test_tree_image_id(path, key):
    assert tree_image_id(path) == key


def test_mark_pseudo_boxes_marks_only_the_pseudo_images():
    labels = [
        {"im_file": "/t/a.jpg", "cls": np.array([[0.0], [2.0]], dtype=np.float32)},
        {"im_file": "/t/b~4.jpg", "cls": np.array([[1.0]], dtype=np.float32)},
        {"im_file": "/t/c.jpg", "cls": np.zeros((0, 1), dtype=np.float32)},  # a negative: nothing to mark
        {"im_file": "/t/d.jpg", "cls": np.array([[1.0]], dtype=np.float32)},
    ]
    assert mark_pseudo_boxes(labels, {"a": None, "b": None, "c": None}) == 3
    assert [lb["cls"].ravel().tolist() for lb in labels] == [[0.5, 2.5], [1.5], [], [1.0]]


def test_listed_boxes_are_marked_by_value_even_reordered():
    """`train.max_box_spread`: only the listed boxes, found by class and coordinates (label-file
    values, six decimals, read back as float32); a listed box the image no longer has marks nothing."""
    bboxes = np.array([[0.5, 0.5, 0.2, 0.2], [0.25, 0.75, 0.1, 0.3], [0.5, 0.5, 0.2, 0.2]], dtype=np.float32)
    labels = [{"im_file": "/t/a~masked.jpg", "cls": np.array([[1.0], [0.0], [2.0]], dtype=np.float32),
               "bboxes": bboxes[::-1].copy()},  # reordered against the listing
              {"im_file": "/t/b.jpg", "cls": np.array([[1.0]], dtype=np.float32), "bboxes": bboxes[:1].copy()}]
    marks = {"a": [[0, 0.25, 0.75, 0.1, 0.3], [2, 0.5, 0.5, 0.2, 0.2], [1, 0.9, 0.9, 0.1, 0.1]],
             "b": [[0, 0.5, 0.5, 0.2, 0.2]]}  # b's box has class 1: not this one
    assert mark_pseudo_boxes(labels, marks) == 2
    assert [lb["cls"].ravel().tolist() for lb in labels] == [[1.0, 0.5, 2.5], [1.0]]


@pytest.fixture(scope="module")
def ultralytics(tmp_path_factory):
    from ssl_ray.runtime import prepare_ultralytics

    return prepare_ultralytics(tmp_path_factory.mktemp("ul"))


def test_the_mark_survives_mosaic_and_perspective(ultralytics, shapes):
    """Mosaic mixes four images' boxes: a box's mark must travel with it, not with the image."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset

    data = {"names": {0: "circle", 1: "square", 2: "triangle"}, "nc": 3, "channels": 3}
    args = get_cfg(overrides={"imgsz": 96, "mosaic": 1.0, "degrees": 10.0, "fliplr": 0.5, "cache": False})
    dataset = build_yolo_dataset(args, str(shapes.parent / "images" / "train"), 8, data, mode="train", stride=32)
    keys = sorted({tree_image_id(lb["im_file"]) for lb in dataset.labels})
    pseudo = dict.fromkeys(keys[::2])
    plain_boxes = {tree_image_id(lb["im_file"]): lb["cls"].ravel().tolist() for lb in dataset.labels}
    assert mark_pseudo_boxes(dataset.labels, pseudo) == sum(len(plain_boxes[k]) for k in pseudo)
    fractions = []
    for i in range(len(dataset)):
        fractions.extend((dataset[i]["cls"].numpy().ravel() % 1).tolist())
    assert set(np.round(fractions, 6)) == {0.0, PSEUDO_MARK}  # whole classes, or marked; nothing else


def _loss_parts(ultralytics, weight: float | None, marked_images: set[int]):
    """(box, cls, dfl or l1) of YOLO26n's loss on a fixed batch of two images, image 1's boxes marked
    when listed; `weight` None: Ultralytics' own criterion, no marks."""
    import torch
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    from ssl_ray.ray_trainer import BoxLossWeights

    torch.manual_seed(0)
    model = DetectionModel("yolo26n.yaml", nc=3, verbose=False)
    model.args = get_cfg()
    model.train()
    criterion = model.init_criterion()
    if weight is not None:
        for loss in (criterion.one2many, criterion.one2one):
            BoxLossWeights(loss, weight)
    cls = torch.tensor([[1.0], [0.0], [2.0], [1.0]])
    batch_idx = torch.tensor([0.0, 0.0, 1.0, 1.0])
    for i in marked_images:
        cls[batch_idx == i] += PSEUDO_MARK
    batch = {"img": torch.rand(2, 3, 64, 64), "batch_idx": batch_idx, "cls": cls,
             "bboxes": torch.tensor([[0.3, 0.3, 0.3, 0.3], [0.7, 0.6, 0.25, 0.4],
                                     [0.5, 0.5, 0.5, 0.4], [0.2, 0.75, 0.2, 0.3]])}
    preds = model(batch["img"])
    total, _ = criterion(preds, batch)  # (box, cls, dfl) x batch size, what the trainer sums and backpropagates
    return total.detach().numpy() / 2


def test_box_loss_weights(ultralytics):
    plain = _loss_parts(ultralytics, None, set())
    assert (plain > 0).all()
    np.testing.assert_allclose(_loss_parts(ultralytics, 1.0, {1}), plain, rtol=1e-6)  # the mark itself changes nothing
    np.testing.assert_allclose(_loss_parts(ultralytics, 0.0, set()), plain, rtol=1e-6)  # unmarked boxes keep weight 1
    none = _loss_parts(ultralytics, 0.0, {0, 1})
    assert none[0] == none[2] == 0 and none[1] == pytest.approx(plain[1], rel=1e-6)  # no box loss; class loss as is
    zero, half = _loss_parts(ultralytics, 0.0, {1}), _loss_parts(ultralytics, 0.5, {1})
    assert 0 < zero[0] < plain[0] and 0 < zero[2] < plain[2]  # image 0's boxes still count
    np.testing.assert_allclose(half, (zero + plain) / 2, rtol=1e-5)  # linear in the weight
    np.testing.assert_allclose([zero[1], half[1]], [plain[1]] * 2, rtol=1e-6)
