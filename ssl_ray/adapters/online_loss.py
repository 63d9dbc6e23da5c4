"""The online mode's loss (`train.ssl: online`), on Ultralytics' own criterion.

One forward runs over labeled + strong unlabeled images (DDP needs one forward per backward);
`OnlineCriterion` splits the predictions and adds the unlabeled loss, weighted and ramped,
to Ultralytics' loss on the labeled part. Uncertain boxes reach Ultralytics' loss through
its task-aligned assigner: `GatedAssigner` scales the classification targets of anchors
assigned to them by the teacher's score and drops them from the box losses. This holds for
every `v8DetectionLoss` inside the criterion: YOLO11's one, and both of YOLO26's `E2ELoss`
(one-to-many and one-to-one), whose `update()` keeps working through the wrapper. torch is
imported where it is used: importing this module stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def per_image(values: torch.Tensor, batch_idx: torch.Tensor, batch_size: int, fill=0) -> torch.Tensor:
    """(batch_size, max boxes per image) layout of per-box `values`, as Ultralytics'
    `v8DetectionLoss.preprocess` lays out its targets (rows sorted by image, order kept)."""
    import torch

    idx = batch_idx.long()
    if not len(idx):
        return values.new_full((batch_size, 0), fill)
    counts = torch.bincount(idx, minlength=batch_size)
    offsets = torch.zeros(batch_size + 1, dtype=torch.long, device=idx.device)
    offsets[1:] = counts.cumsum(0)
    within = torch.arange(len(idx), device=idx.device) - offsets[idx]
    out = values.new_full((batch_size, int(counts.max())), fill)
    out[idx, within] = values
    return out


class GatedAssigner:
    """Ultralytics' task-aligned assigner, then per ground-truth box: classification targets
    scaled by `weight`, box losses only where `box` (set by `OnlineCriterion` for one call)."""

    def __init__(self, assigner):
        self.assigner = assigner
        self.gate: tuple[torch.Tensor, torch.Tensor] | None = None  # (weight, box), (batch, max boxes)

    def __call__(self, *args, **kwargs):
        labels, bboxes, scores, fg, gt_idx = self.assigner(*args, **kwargs)
        if self.gate is not None and self.gate[0].shape[1]:
            weight, box = self.gate
            scores = scores * weight.gather(1, gt_idx).unsqueeze(-1).to(scores.dtype)
            fg = fg & box.gather(1, gt_idx)
        return labels, bboxes, scores, fg, gt_idx


def detection_losses(criterion) -> list:
    """The `v8DetectionLoss` objects inside an Ultralytics criterion (E2ELoss has two)."""
    parts = [getattr(criterion, k) for k in ("one2many", "one2one") if hasattr(criterion, k)]
    return parts or [criterion]


def tree_slice(tree, sl: slice):
    """Every tensor of a nested dict / list / tuple of predictions, sliced on its batch axis."""
    import torch

    if isinstance(tree, torch.Tensor):
        return tree[sl]
    if isinstance(tree, dict):
        return {k: tree_slice(v, sl) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_slice(v, sl) for v in tree)
    return tree


class OnlineCriterion:
    """Ultralytics' criterion on the labeled part of a batch, plus `weight` x the same loss on
    the unlabeled part against the teacher's targets (a batch without "online": as is)."""

    def __init__(self, inner):
        self.inner = inner
        self.gates = []
        for loss in detection_losses(inner):
            if not isinstance(loss.assigner, GatedAssigner):
                loss.assigner = GatedAssigner(loss.assigner)
            self.gates.append(loss.assigner)

    def __getattr__(self, name):  # update(), hyp, ... of the wrapped criterion
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __call__(self, preds, batch):
        online = batch.get("online")
        if online is None:
            return self.inner(preds, batch)
        preds = preds[1] if isinstance(preds, tuple) else preds
        n = online["n_labeled"]
        loss, items = self.inner(tree_slice(preds, slice(0, n)), batch)
        unlabeled = {k: online[k] for k in ("batch_idx", "cls", "bboxes")}
        size = int(_batch_size(preds)) - n
        gate = (
            per_image(online["gt_weight"], online["batch_idx"], size),
            per_image(online["gt_box"], online["batch_idx"], size, False),
        )
        for g in self.gates:
            g.gate = gate
        try:
            unsup, _ = self.inner(tree_slice(preds, slice(n, None)), unlabeled)
        finally:
            for g in self.gates:
                g.gate = None
        return loss + online["weight"] * unsup, items


def _batch_size(preds) -> int:
    import torch

    while not isinstance(preds, torch.Tensor):
        preds = next(iter(preds.values())) if isinstance(preds, dict) else preds[0]
    return preds.shape[0]
