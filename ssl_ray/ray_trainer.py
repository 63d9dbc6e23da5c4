"""Ultralytics' DetectionTrainer as one rank of a Ray Train DDP group.

Everything that makes training good (loss, augmentation, EMA, LR schedule, validation,
checkpoint format) stays Ultralytics'. The subclass changes only how it meets Ray:

- **no launcher**: it never spawns torchrun (`ddp=False`), and `_setup_ddp` does not create a
  process group: Ray Train already did (gloo on CPU, nccl on GPU); it only picks the device.
- **world size** is Ray's, so Ultralytics' own DDP semantics hold: the total batch is split
  over ranks, losses are scaled, validation is reduced across ranks.
- **the DDP wrap** is done here: Ultralytics passes `device_ids=[device.index]`, which torch
  rejects for CPU modules (index None). Its setup runs as a single process (same per-rank
  batch, same optimizer), then the model is wrapped with `device_ids=None` on CPU.
- **CUDA_VISIBLE_DEVICES** set by Ray is restored after Ultralytics' `select_device`.
- **AMP check** never downloads: Ultralytics' `check_amp` fetches `yolo26n.pt` to compare fp32
  and fp16 outputs, retrying for minutes on an offline node. The check runs only when that
  file is already in Ultralytics' weights folder; otherwise AMP stays on, which is what
  Ultralytics itself does when it cannot download. Rank 0's verdict is broadcast to every rank
  (a rank training with a grad scaler and another without would average unlike gradients).
- **final evaluation**: `final_eval` strips checkpoints but does not re-validate best.pt (its
  standalone validator assumes CUDA inside DDP ranks); the best epoch's distributed
  validation is the result.
- **pseudo-box weight** (`train.pseudo_box_weight` < 1): the box-regression losses (IoU, and
  DFL or L1) of the boxes on pseudo-labeled images (with `train.max_box_spread` or
  `train.min_box_score`, only of the unsure ones: `export.pseudo_box_marks`) are scaled by the
  weight; their classification loss is not. A per-box mark has to survive Ultralytics'
  augmentation (mosaic mixes four images' boxes), and only the class column travels with
  every box: the marked boxes of the training dataset's in-memory labels get `PSEUDO_MARK`
  added to their class, and the loss takes it off again (`BoxLossWeights`) before the
  assigner reads the class. The tree on disk stays plain YOLO.
- **audit**: per epoch, each rank appends the images it trained on (count + digest) and a
  digest of its parameters to `<save_dir>/ranks/rank<N>.jsonl`: proof that the shards differ
  and the weights agree.

Importing Ultralytics has side effects, so the class is defined on first use, inside a Ray
Train worker after `ssl_ray.runtime.prepare_ultralytics`: call `make_trainer(...)`.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache


PSEUDO_MARK = 0.5  # added to the class of a box whose box losses are weighted (exact in float32)


def make_trainer(world_size: int, overrides: dict, pseudo_marks: dict | None = None, pseudo_box_weight: float = 1.0):
    """A RayDetectionTrainer for this rank. `pseudo_marks` (`export.pseudo_box_marks`): the boxes
    that get `pseudo_box_weight` in the box losses."""
    return _trainer_class()(world_size, overrides, pseudo_marks or {}, pseudo_box_weight)


@cache
def _trainer_class():
    import torch
    import ultralytics.engine.trainer as ultralytics_trainer
    from torch import nn
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.utils import DEFAULT_CFG, RANK

    ultralytics_trainer.check_amp = offline_check_amp(ultralytics_trainer.check_amp)

    class RayDetectionTrainer(DetectionTrainer):
        def __init__(self, world_size: int, overrides: dict, pseudo_marks: dict, pseudo_box_weight: float = 1.0,
                     _callbacks=None):
            self.pseudo_marks = pseudo_marks if pseudo_box_weight != 1.0 else {}
            self.pseudo_box_weight = pseudo_box_weight
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            super().__init__(cfg=DEFAULT_CFG, overrides=overrides, _callbacks=_callbacks)
            if visible is not None:  # select_device rewrote it; Ray's assignment is the truth
                os.environ["CUDA_VISIBLE_DEVICES"] = visible
            self.ddp = False  # never launch torchrun: Ray Train started the ranks
            self.world_size = world_size
            self._seen: list[str] = []

        def _setup_ddp(self):
            """The process group exists (Ray Train); just take the device Ray assigned."""
            import ray.train.torch

            self.device = ray.train.torch.get_device()

        def _setup_train(self):
            world = self.world_size
            total = self.batch_size
            # Ultralytics' setup as one process on this rank's share of the batch...
            self.world_size, self.batch_size = 1, max(total // max(world, 1), 1)
            try:
                super()._setup_train()
            finally:
                self.world_size, self.batch_size = world, total
            if world > 1 and self.device.type == "cuda":  # one AMP verdict for the group (rank 0's)
                import torch.distributed as dist

                verdict = torch.tensor(int(self.amp), device=self.device)
                dist.broadcast(verdict, src=0)
                if bool(verdict) != self.amp:
                    self.amp = bool(verdict)
                    self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.args.amp != "bf16")
            # ...with the accumulation of the whole group, as Ultralytics computes it for DDP.
            self.accumulate = max(round(self.args.nbs / total), 1)
            if not self.args.time:
                self.accumulate = min(self.accumulate, len(self.train_loader) * self.epochs)
            if self.pseudo_marks:  # the trained model's criterion; the EMA copy validates with its own
                if getattr(self.model, "criterion", None) is None:  # resuming has made one already
                    self.model.criterion = self.model.init_criterion()
                criterion = self.model.criterion  # E2E models (YOLO26) sum two detection losses
                for loss in (criterion.one2many, criterion.one2one) if hasattr(criterion, "one2many") else (criterion,):
                    BoxLossWeights(loss, self.pseudo_box_weight)
            if world > 1:  # Ultralytics' own DDP arguments; device_ids=None for CPU modules
                buffers = "forward_sync_buffers" if "forward_sync_buffers" in _ddp_params() else "broadcast_buffers"
                self.model = nn.parallel.DistributedDataParallel(
                    self.model, device_ids=None if self.device.type == "cpu" else [self.device.index],
                    find_unused_parameters=not bool(self.args.compile), static_graph=bool(self.args.compile),
                    **{buffers: False},
                )

        def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None):
            dataset = super().build_dataset(img_path, mode, batch)
            if mode == "train" and self.pseudo_marks:
                marked = mark_pseudo_boxes(dataset.labels, self.pseudo_marks)
                if RANK in {-1, 0}:
                    from ultralytics.utils import LOGGER

                    LOGGER.info(f"pseudo_box_weight {self.pseudo_box_weight}: {marked} pseudo-boxes")
            return dataset

        def preprocess_batch(self, batch):
            self._seen.extend(batch["im_file"])
            return super().preprocess_batch(batch)

        def final_eval(self):
            """Strip the optimizer from last.pt/best.pt, as Ultralytics does, without its re-validation
            of best.pt: that runs a standalone validator which, inside any DDP rank, assumes CUDA.
            The held-out metrics of the best epoch come from the (distributed) per-epoch validation."""
            from ultralytics.utils.torch_utils import strip_optimizer

            if RANK in {-1, 0}:
                ckpt = strip_optimizer(self.last) if self.last.exists() else {}
                if self.best.exists():
                    strip_optimizer(self.best, updates={"train_results": ckpt.get("train_results")})

        def write_audit(self) -> None:
            """Append this rank's epoch record (images seen, parameter digest) and reset the list.
            Parameters are what DDP keeps identical; BatchNorm statistics are per rank by design
            (Ultralytics turns buffer broadcasting off)."""
            from ultralytics.utils.torch_utils import unwrap_model

            seen = sorted(set(self._seen))
            self._seen = []
            record = {
                "epoch": self.epoch + 1, "rank": max(RANK, 0), "pid": os.getpid(), "images": len(seen),
                "images_digest": hashlib.blake2b("\n".join(seen).encode(), digest_size=16).hexdigest(),
                "weights_digest": parameters_digest(unwrap_model(self.model)),
            }
            folder = self.save_dir / "ranks"
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / f"rank{max(RANK, 0)}.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    return RayDetectionTrainer


def mark_pseudo_boxes(labels: list[dict], marks: dict[str, list[list[float]] | None]) -> int:
    """Add `PSEUDO_MARK` to the classes of the boxes in `marks` (`export.pseudo_box_marks`: every
    box of an image, or the boxes listed by their label-file values) in Ultralytics' dataset
    labels, in place; how many boxes. Listed boxes are found by value, not by position:
    Ultralytics drops duplicate label lines, which reorders them."""
    import numpy as np

    from ssl_ray.export import tree_image_id

    marked = 0
    for label in labels:
        key = tree_image_id(label["im_file"])
        if not len(label["cls"]) or key not in marks:
            continue
        if marks[key] is None:
            hit = np.ones(len(label["cls"]), bool)
        else:
            values = np.concatenate([label["cls"].reshape(-1, 1), label["bboxes"]], axis=1)
            # six decimals in the label file, read back as float32: within 1e-7 of the listed values
            hit = (np.abs(values[:, None] - np.asarray(marks[key], np.float64)[None]) <= 2e-6).all(-1).any(-1)
        label["cls"] = label["cls"] + PSEUDO_MARK * hit.reshape(-1, 1).astype(label["cls"].dtype)
        marked += int(hit.sum())
    return marked


class BoxLossWeights:
    """Scales the box losses of marked boxes by `weight` inside one Ultralytics detection loss
    (a `v8DetectionLoss`; E2E models have two). It wraps the loss's assigner, which sees each
    image's padded classes: it takes the mark off before assigning, then maps every anchor to
    the weight of the box it was assigned. It wraps the box loss, which scales the anchors'
    target scores by that weight (the normalizer, the sum of all target scores, is unchanged:
    the classification loss and the other boxes' losses are exactly as without weights)."""

    def __init__(self, loss, weight: float):
        self.weight = float(weight)
        self.assigner, self.bbox_loss = loss.assigner, loss.bbox_loss
        self.anchor_weight = None  # (batch, anchors), set by the last assignment
        loss.assigner, loss.bbox_loss = self.assign, self.box_loss

    def assign(self, pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt, **extra):
        import torch

        classes = gt_labels.floor()
        marked = (gt_labels - classes) > PSEUDO_MARK / 2
        out = self.assigner(pd_scores, pd_bboxes, anc_points, classes, gt_bboxes, mask_gt, **extra)
        self.anchor_weight = None
        if gt_labels.shape[1]:  # (no `marked.any()` test: it would wait for the device every batch)
            box_weight = torch.where(marked, self.weight, 1.0).squeeze(-1).to(pd_scores.dtype)  # (batch, boxes)
            self.anchor_weight = box_weight.gather(1, out[4].long())  # target_gt_idx: each anchor's box
        return out

    def box_loss(self, pred_dist, pred_bboxes, anchor_points, target_bboxes, target_scores, *rest):
        if self.anchor_weight is not None:
            target_scores = target_scores * self.anchor_weight.unsqueeze(-1)
        return self.bbox_loss(pred_dist, pred_bboxes, anchor_points, target_bboxes, target_scores, *rest)


def offline_check_amp(check_amp):
    """Ultralytics' `check_amp`, run only when its reference weights are already local."""

    def check(model):
        from ultralytics.utils import LOGGER, WEIGHTS_DIR

        if next(model.parameters()).device.type != "cuda" or (WEIGHTS_DIR / "yolo26n.pt").is_file():
            return check_amp(model)  # CPU: False at once; CUDA with local weights: the real check
        LOGGER.info("AMP: check skipped (no local yolo26n.pt and no downloads at run time); AMP stays on")
        return True

    check.__wrapped__ = check_amp
    return check


def _ddp_params() -> set[str]:
    import inspect

    from torch import nn

    return set(inspect.signature(nn.parallel.DistributedDataParallel).parameters)


def parameters_digest(model) -> str:
    """Digest of a torch module's parameters (names and values)."""
    h = hashlib.blake2b(digest_size=16)
    for name, param in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(param.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
