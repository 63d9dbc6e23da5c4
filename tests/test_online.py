"""The online teacher–student (`train.ssl: online`): pseudo-target assignment, the unlabeled
loss's ramp, the teacher's update, view geometry, the loss on real Ultralytics criteria
(YOLO26's end-to-end one and YOLO11's), sharding, and a 2-rank DDP run in this mode."""

import types

import numpy as np
import pytest
import torch

from ssl_ray.core.online import pseudo_targets, teacher_decay, unsup_weight

HIGH = [0.5, 0.8]  # class 0's and class 1's reliable threshold


@pytest.mark.parametrize(
    "score, cls, low, expected",
    [
        (0.9, 0, 0.1, ("reliable", 1.0)),
        (0.5, 0, 0.1, ("reliable", 1.0)),  # at the threshold: reliable
        (0.49, 0, 0.1, ("uncertain", 0.49)),  # below it: soft target = its score, no box loss
        (0.7, 1, 0.1, ("uncertain", 0.7)),  # the class's own threshold decides (0.8 for class 1)
        (0.8, 1, 0.1, ("reliable", 1.0)),
        (0.1, 0, 0.1, ("uncertain", 0.1)),  # at the floor: uncertain
        (0.09, 0, 0.1, ("background", None)),
        (0.49, 0, None, ("background", None)),  # no soft targets: below the threshold is background
        (0.9, 1, None, ("reliable", 1.0)),
    ],
)
def test_pseudo_target_assignment(score, cls, low, expected):
    det = np.array([[10, 20, 30, 60, score, cls]], dtype=float)
    t = pseudo_targets([det], HIGH, low, (64, 64))
    kind, weight = expected
    if kind == "background":
        assert len(t) == 0
        return
    assert len(t) == 1 and t.cls[0] == cls and t.weight[0] == pytest.approx(weight)
    assert bool(t.box[0]) == (kind == "reliable")
    assert t.xywhn[0] == pytest.approx([20 / 64, 40 / 64, 20 / 64, 40 / 64])


@pytest.mark.parametrize(
    "score, agree, low, expected",
    [
        (0.9, 1.0, 0.1, ("reliable", 1.0)),  # every view found it
        (0.9, 0.5, 0.1, ("uncertain", 0.9)),  # above the threshold, but a view missed it: soft, no box loss
        (0.9, 0.0, None, ("background", None)),  # ... and without soft targets it is background
        (0.3, 1.0, 0.1, ("uncertain", 0.3)),  # agreement does not promote a box below its threshold
    ],
)
def test_a_box_the_teachers_views_disagree_on_is_not_reliable(score, agree, low, expected):
    det = np.array([[10, 20, 30, 60, score, 0]], dtype=float)
    t = pseudo_targets([det], HIGH, low, (64, 64), agree=[np.array([agree])], min_agree=1.0)
    kind, weight = expected
    assert len(t) == (kind != "background")
    if len(t):
        assert bool(t.box[0]) == (kind == "reliable") and t.weight[0] == pytest.approx(weight)


def test_pseudo_targets_keep_image_order_clip_and_drop_slivers():
    dets = [
        np.array([[0, 0, 10, 10, 0.9, 0]]),
        np.zeros((0, 6)),
        np.array([[-5, 50, 20, 80, 0.9, 1], [30, 30, 31, 40, 0.9, 0], [40, 40, 60, 60, 0.3, 0]]),
    ]
    t = pseudo_targets(dets, HIGH, 0.1, (64, 64))
    assert t.batch_idx.tolist() == [0, 2, 2]  # the 1-px-wide box is dropped
    assert t.xywhn[1] == pytest.approx([10 / 64, 57 / 64, 20 / 64, 14 / 64])  # clipped to the canvas
    assert (t.n_reliable, t.n_uncertain) == (2, 1)
    with pytest.raises(ValueError, match="class ids"):
        pseudo_targets([np.array([[0, 0, 9, 9, 0.9, 5]])], HIGH, 0.1, (64, 64))


def test_unsup_weight_ramps_linearly_then_holds():
    assert [unsup_weight(s, 2.0, 4) for s in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert unsup_weight(0, 2.0, 0) == 2.0


def test_teacher_updates_once_per_step_after_it_with_a_constant_decay():
    """Ultralytics' ModelEMA with the teacher's decay, driven as `optimizer_step` drives it:
    the step first, then one update: teacher' = d teacher + (1 - d) student'."""
    from ultralytics.utils.torch_utils import ModelEMA

    torch.manual_seed(0)
    student = torch.nn.Linear(3, 2)
    ema = ModelEMA(student)
    ema.decay = teacher_decay(0.9)
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    for _ in range(3):
        before = ema.ema.weight.detach().clone()
        student(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
        ema.update(student)
        assert torch.allclose(ema.ema.weight, 0.9 * before + 0.1 * student.weight.detach())
    assert ema.updates == 3


def test_strong_view_keeps_geometry():
    """The strong view moves no pixel: an object's box on the weak view is its box there."""
    from ssl_ray.adapters.online import strong_view

    weak = torch.full((4, 3, 64, 64), 0.2)
    weak[:, :, 20:40, 30:60] = 0.9
    gen = torch.Generator().manual_seed(0)
    strong = strong_view(weak, gen, erase=0)
    for img in strong:
        grey = img.mean(0)
        mask = grey > (grey.max() + grey.min()) / 2
        ys, xs = np.nonzero(mask.numpy())
        assert abs(ys.min() - 20) <= 1 and abs(ys.max() - 39) <= 1
        assert abs(xs.min() - 30) <= 1 and abs(xs.max() - 59) <= 1
    assert not torch.allclose(strong, weak)  # and it is a different view
    erased = strong_view(weak, torch.Generator().manual_seed(1))
    assert erased.shape == weak.shape and 0 <= erased.min() and erased.max() <= 1


def test_a_teacher_box_lands_on_the_same_object_in_the_student_view():
    """The student's view is scaled and shifted; the teacher's box on the weak view, mapped
    with it, still bounds the object (to a pixel), whatever the draw."""
    from ssl_ray.adapters.online import geometric_view

    weak = torch.full((6, 3, 96, 128), 0.1)
    weak[:, :, 30:50, 40:80] = 1.0  # rows 30..49, columns 40..79
    box = np.array([[40, 30, 80, 50, 0.9, 0]], dtype=float)
    moved, boxes = geometric_view(weak, [box] * 6, torch.Generator().manual_seed(3))
    assert moved.shape == weak.shape
    scales = set()
    for img, b in zip(moved, boxes):
        mask = img.mean(0) > 0.55
        ys, xs = np.nonzero(mask.numpy())
        x1, y1, x2, y2 = b[0, :4]
        assert abs(xs.min() - x1) <= 1 and abs(xs.max() + 1 - x2) <= 1
        assert abs(ys.min() - y1) <= 1 and abs(ys.max() + 1 - y2) <= 1
        scales.add(round((x2 - x1) / 40, 2))
    assert len(scales) > 1  # the draws differ
    assert boxes[0][0, 4:].tolist() == [0.9, 0]


def test_refined_teacher_boxes_match_the_label_stage_refiner_and_spare_low_scores():
    """`train.refine_pseudo`: on the float weak view, the refiner moves the boxes scoring at
    least refine.min_score exactly as it moves them on the uint8 canvases the label stage
    gives it; lower-scoring boxes, every score and every class stay as the teacher gave them."""
    from ssl_ray.adapters.online import refine_boxes
    from ssl_ray.adapters.refiner import BoxRefiner
    from ssl_ray.config import RefineConfig

    torch.manual_seed(0)
    canvases = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8)
    weak = canvases.float() / 255
    dets = [np.array([[5, 5, 20, 20, 0.9, 2], [10, 10, 30, 30, 0.05, 1]], float), np.zeros((0, 6))]
    refiner = BoxRefiner(RefineConfig(crop=16, blend=1.0, min_score=0.1))
    out = refine_boxes(refiner, weak, dets)
    label_stage = refiner(list(canvases.permute(0, 2, 3, 1).numpy()), [dets[0][:1, :4], dets[1][:, :4]])
    np.testing.assert_allclose(out[0][0, :4], label_stage[0][0], atol=1e-9)
    assert not np.array_equal(out[0][0, :4], dets[0][0, :4])  # an untrained net still moves it
    np.testing.assert_array_equal(out[0][1], dets[0][1])  # below min_score: untouched
    np.testing.assert_array_equal(out[0][:, 4:], dets[0][:, 4:])
    assert out[1].shape == (0, 6)


def test_teacher_views_fuse_an_object_both_views_find_and_flag_a_box_only_one_finds(monkeypatch):
    """`train.teacher_consistency` with the flip view: a detector that finds the bright block
    on every view (and a phantom box always at the canvas's top-left corner, which the flip
    maps elsewhere): the block's box agrees, the phantom does not; one forward for both views."""
    import ssl_ray.adapters.online as online
    from ssl_ray.core.consistency import parse_views

    calls = []

    def fake_teacher(teacher, x, conf):
        calls.append(len(x))
        out = []
        for img in x:
            ys, xs = np.nonzero((img.mean(0) > 0.55).numpy())
            block = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 0.9, 1]
            out.append(np.array([block, [0, 0, 8, 8, 0.95, 0]], float))
        return out

    monkeypatch.setattr(online, "teacher_detections", fake_teacher)
    x = torch.full((2, 3, 64, 96), 0.1)
    x[:, :, 10:30, 50:70] = 1.0
    found, agree = online.detect_with_teacher_views(None, x, 0.1, parse_views(["flip"], 96, 64), 0.5)
    assert calls == [4]  # the images and their flips in one batch
    for det, share in zip(found, agree):
        block, phantom = det[np.argsort(-det[:, 5])]
        assert block[:4] == pytest.approx([50, 10, 70, 30], abs=1e-6) and share[det[:, 5] == 1] == 1.0
        assert phantom[:4].tolist() == [0, 0, 8, 8] and share[det[:, 5] == 0] == 0.0
    t = pseudo_targets(found, [0.5, 0.5], 0.1, (64, 96), agree=agree)
    assert (t.n_reliable, t.n_uncertain) == (2, 2) and (t.cls[t.box] == 1).all()
    assert online.detect_with_teacher_views(None, x, 0.1, [], 0.5)[1] is None  # no views: as before


def test_refine_pseudo_needs_the_refiner():
    from ssl_ray.config import load_config
    from ssl_ray.errors import ConfigError

    assert load_config(overrides=["train.refine_pseudo=true"]).train.refine_pseudo
    with pytest.raises(ConfigError, match="refine.enabled"):
        load_config(overrides=["train.refine_pseudo=true", "refine.enabled=false"])


def test_weak_flip_is_shared_by_both_views():
    from ssl_ray.adapters.online import flip_some, strong_view

    x = torch.rand(8, 3, 16, 16)
    weak = flip_some(x, torch.Generator().manual_seed(0))
    flipped = [bool(torch.equal(w, xi.flip(-1))) for w, xi in zip(weak, x)]
    assert any(flipped) and not all(flipped)
    assert all(torch.equal(w, xi) for w, xi, f in zip(weak, x, flipped) if not f)
    strong = strong_view(weak, torch.Generator().manual_seed(0), erase=0)
    # the strong view is laid out as its weak view, not as the other orientation
    for s, w in zip(strong, weak):
        same = np.corrcoef(s.mean(0).flatten(), w.mean(0).flatten())[0, 1]
        other = np.corrcoef(s.mean(0).flatten(), w.flip(-1).mean(0).flatten())[0, 1]
        assert same > other + 0.2


def test_per_image_layout_is_ultralytics_target_layout():
    from ultralytics.utils.loss import v8DetectionLoss

    from ssl_ray.adapters.online_loss import per_image

    batch_idx = torch.tensor([0.0, 0, 2, 2, 2, 3])
    weight = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    targets = torch.cat([batch_idx[:, None], weight[:, None], torch.zeros(6, 4)], 1)
    ours = per_image(weight, batch_idx, 4)
    theirs = v8DetectionLoss.preprocess(types.SimpleNamespace(device=torch.device("cpu")), targets, 4, torch.ones(4))
    assert torch.equal(ours, theirs[..., 0])
    assert per_image(weight[:0], batch_idx[:0], 4).shape == (4, 0)


def _model(name):
    from ssl_ray.adapters.runtime import prepare_ultralytics

    prepare_ultralytics("/tmp/ssl_ray-test-ultralytics")
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(f"{name}.yaml", nc=2, verbose=False)
    model.args = get_cfg()
    model.train()
    return model


def _batch(n, boxes):
    rows = [(i, c, *xywh) for i, c, xywh in boxes]
    t = torch.tensor(rows, dtype=torch.float32).view(-1, 6)
    return {"batch_idx": t[:, 0], "cls": t[:, 1:2], "bboxes": t[:, 2:6]}


@pytest.mark.parametrize("name", ["yolo26n", "yolo11n"])
def test_online_loss_is_labeled_loss_plus_weighted_unlabeled_loss(name):
    """On Ultralytics' real criteria: one forward over labeled + unlabeled images gives the
    labeled loss plus w x the unlabeled one; an uncertain box teaches its class softly and no
    box; the gradient flows."""
    from ssl_ray.adapters.online_loss import OnlineCriterion

    model = _model(name)
    crit = OnlineCriterion(model.init_criterion())
    x = torch.rand(4, 3, 64, 64)
    labeled = _batch(2, [(0, 0, (0.5, 0.5, 0.4, 0.4)), (1, 1, (0.3, 0.3, 0.2, 0.3))])
    unl = _batch(2, [(0, 1, (0.4, 0.5, 0.3, 0.3)), (1, 0, (0.6, 0.6, 0.3, 0.2))])
    online = {
        "n_labeled": 2,
        "weight": 0.5,
        **unl,
        "gt_weight": torch.tensor([1.0, 0.4]),
        "gt_box": torch.tensor([True, False]),
    }
    preds = model(x)
    total, items = crit(preds, {**labeled, "online": online})
    preds = model(x)  # same weights, same input: same predictions
    sup, sup_items = crit.inner(_slice(preds, 0, 2), labeled)
    full_unl, _ = crit.inner(_slice(preds, 2, 4), unl)  # as if both boxes were reliable
    assert set(items) == set(sup_items)
    unsup = (total - sup).detach() / 0.5
    assert unsup.sum() > 0
    assert not torch.allclose(unsup, full_unl.detach()), "the uncertain box was trained like a reliable one"
    total.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    # weight 0: the labeled loss alone
    preds = model(x)
    zero, _ = crit(preds, {**labeled, "online": {**online, "weight": 0.0}})
    assert torch.allclose(zero, sup.detach(), rtol=1e-4, atol=1e-5)
    if hasattr(crit.inner, "update"):  # YOLO26's E2ELoss: the trainer's per-epoch update still reaches it
        before = crit.inner.o2m
        crit.update()
        assert crit.inner.o2m != before


def _slice(preds, a, b):
    from ssl_ray.adapters.online_loss import tree_slice

    return tree_slice(preds, slice(a, b))


def test_gated_assigner_softens_and_unboxes_uncertain_boxes_only():
    from ultralytics.utils.tal import TaskAlignedAssigner

    from ssl_ray.adapters.online_loss import GatedAssigner

    torch.manual_seed(0)
    assigner = GatedAssigner(TaskAlignedAssigner(topk=4, num_classes=2, alpha=0.5, beta=6.0, stride=[8]))
    anchors = torch.stack(torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="xy"), -1).view(-1, 2) * 8 + 4
    gt = torch.tensor([[[0, 0, 0, 24, 24], [1, 32, 32, 64, 64]]], dtype=torch.float32)
    scores = torch.rand(1, 64, 2)
    boxes = torch.cat([anchors - 10, anchors + 10], -1)[None]
    args = (scores, boxes, anchors, gt[..., :1], gt[..., 1:], torch.ones(1, 2, 1))
    _, _, plain_scores, plain_fg, idx = assigner(*args)
    assigner.gate = (torch.tensor([[1.0, 0.3]]), torch.tensor([[True, False]]))
    _, _, gated_scores, gated_fg, _ = assigner(*args)
    first, second = plain_fg[0] & (idx[0] == 0), plain_fg[0] & (idx[0] == 1)
    assert first.any() and second.any()
    assert torch.equal(gated_fg[0], first)  # box losses only on the reliable box's anchors
    assert torch.allclose(gated_scores[0][first], plain_scores[0][first])
    assert torch.allclose(gated_scores[0][second], 0.3 * plain_scores[0][second])


def test_shards_are_disjoint_cover_the_listing_and_resume_in_place():
    from ssl_ray.adapters.online import shard_batches

    paths = [f"p{i:02d}" for i in range(10)]
    shards = [sorted(paths)[r::2] for r in range(2)]
    assert set(shards[0]).isdisjoint(shards[1]) and set(shards[0]) | set(shards[1]) == set(paths)
    it = shard_batches(5, 3, seed=0, rank=0)
    first = [next(it) for _ in range(6)]
    seen = [i for b in first for i in b]
    assert sorted(seen[:5]) == list(range(5)) and sorted(seen[5:10]) == list(range(5))  # whole passes
    resumed = shard_batches(5, 3, seed=0, rank=0, start=4)
    assert [next(resumed) for _ in range(2)] == first[4:6]
    other = shard_batches(5, 3, seed=0, rank=1)
    assert [next(other) for _ in range(6)] != first  # each rank its own order
