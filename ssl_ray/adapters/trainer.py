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
- **data per rank**: each rank's tree holds only its share of the training rows
  (`stages.rank_data.materialize`), so its training loader samples that whole tree (one replica,
  reshuffled per epoch) instead of 1/world of a tree every rank would hold.
- **audit**: per epoch, each rank appends the images it trained on (count + digest) and a
  digest of its parameters to `<save_dir>/ranks/rank<N>.jsonl`: proof that the shards differ
  and the weights agree.
- **online mode** (`online=`, `train.ssl: online`): Ultralytics' EMA model becomes the mean
  teacher (constant decay; what is validated and saved as best.pt) and every labeled batch
  gets an unlabeled one with the teacher's pseudo-targets (`ssl_ray.adapters.online`). Each
  epoch also saves `online.pt`: student and teacher in full precision with the step count, so
  a restarted group resumes both exactly (Ultralytics' last.pt keeps only a half-precision
  EMA, from which it would rebuild the student). The audit adds the teacher's digest.

Importing Ultralytics has side effects, so the class is defined on first use, inside a Ray
Train worker after `ssl_ray.adapters.runtime.prepare_ultralytics`: call `make_trainer(...)`.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from pathlib import Path


def make_trainer(world_size: int, overrides: dict, online: dict | None = None):
    """A RayDetectionTrainer for this rank of a `world_size` group; `online`: the online
    mode's settings (`stages.train._online_settings`), None for plain supervised training."""
    return _trainer_class()(world_size, overrides, online)


@cache
def _trainer_class():
    import torch
    import ultralytics.engine.trainer as ultralytics_trainer
    from torch import nn
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.utils import DEFAULT_CFG, RANK

    ultralytics_trainer.check_amp = offline_check_amp(ultralytics_trainer.check_amp)

    class RayDetectionTrainer(DetectionTrainer):
        def __init__(self, world_size: int, overrides: dict, online: dict | None = None, _callbacks=None):
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            super().__init__(cfg=DEFAULT_CFG, overrides=overrides, _callbacks=_callbacks)
            if visible is not None:  # select_device rewrote it; Ray's assignment is the truth
                os.environ["CUDA_VISIBLE_DEVICES"] = visible
            self.ddp = False  # never launch torchrun: Ray Train started the ranks
            self.world_size = world_size
            self._seen: list[str] = []
            self.online_settings = online
            self.online = None  # OnlineBatch, from _setup_train
            self.online_resumed = None  # the epoch whose student and teacher online.pt restored

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
            if world > 1:  # Ultralytics' own DDP arguments; device_ids=None for CPU modules
                buffers = "forward_sync_buffers" if "forward_sync_buffers" in _ddp_params() else "broadcast_buffers"
                self.model = nn.parallel.DistributedDataParallel(
                    self.model,
                    device_ids=None if self.device.type == "cpu" else [self.device.index],
                    find_unused_parameters=not bool(self.args.compile),
                    static_graph=bool(self.args.compile),
                    **{buffers: False},
                )
            if self.online_settings:
                self._setup_online()

        def _setup_online(self):
            from ultralytics.utils.torch_utils import unwrap_model

            from ssl_ray.adapters.online import OnlineBatch, UnlabeledStream
            from ssl_ray.adapters.online_loss import OnlineCriterion
            from ssl_ray.core.consistency import parse_views
            from ssl_ray.core.online import teacher_decay

            o = self.online_settings
            model = unwrap_model(self.model)
            model.criterion = OnlineCriterion(getattr(model, "criterion", None) or model.init_criterion())
            self.ema.decay = teacher_decay(o["teacher_decay"])
            state = o.get("resume_state")
            if state and Path(state).exists():  # a restarted group: student and teacher exactly as saved
                saved = torch.load(state, map_location=self.device, weights_only=False)
                if saved["epoch"] == self.start_epoch - 1:
                    model.load_state_dict(saved["student"])
                    self.ema.ema.load_state_dict(saved["teacher"])
                    self.ema.updates = saved["updates"]
                    self.online_resumed = saved["epoch"] + 1
            world, rank = max(self.world_size, 1), max(RANK, 0)
            if world > 1:  # one teacher: Ultralytics copied each rank's model before DDP broadcast rank 0's
                import torch.distributed as dist

                for tensor in self.ema.ema.state_dict().values():
                    dist.broadcast(tensor, src=0)
            stream = UnlabeledStream(
                o["paths"],
                self.args.imgsz,
                max(self.batch_size // world, 1),
                seed=self.args.seed,
                rank=rank,
                start=self.start_epoch * len(self.train_loader),
                workers=min(self.args.workers, 2),
            )
            refiner = None
            if o.get("refiner"):
                from ssl_ray.adapters.refiner import BoxRefiner

                state = torch.load(o["refiner"], map_location="cpu", weights_only=True)
                refiner = BoxRefiner.from_state(state, o["refine"], str(self.device))
            self.online = OnlineBatch(
                stream,
                o["high"],
                o["soft_min_score"],
                o["unsup_weight"],
                o["unsup_warmup_steps"],
                self.args.seed + rank,
                refiner=refiner,
                views=parse_views(o["views"], self.args.imgsz) if o["views"] else None,
                view_iou=o["view_iou"],
                min_agree=o["min_agree"],
            )

        def get_dataloader(self, dataset_path, batch_size=16, rank=0, mode="train"):
            """Ultralytics' loader; in a group, the training one samples this rank's whole
            tree, which holds only its share (`core.shards`): Ultralytics' DistributedSampler
            as the only replica, so it still reshuffles by epoch (`set_epoch`) and a resumed
            epoch sees the same order. Validation stays split over the ranks, as Ultralytics
            does (every rank's tree holds the whole held-out set)."""
            if mode != "train" or self.world_size <= 1:
                return super().get_dataloader(dataset_path, batch_size, rank, mode)
            import functools
            import types

            import ultralytics.data.build as build

            distributed = build.distributed
            one = functools.partial(distributed.DistributedSampler, num_replicas=1, rank=0)
            build.distributed = types.SimpleNamespace(DistributedSampler=one)
            try:
                return super().get_dataloader(dataset_path, batch_size, rank, mode)
            finally:
                build.distributed = distributed

        def preprocess_batch(self, batch):
            self._seen.extend(batch["im_file"])
            batch = super().preprocess_batch(batch)
            if self.online is not None:
                batch = self.online.extend(batch, self.ema.ema, self.ema.updates)
            return batch

        def save_model(self):
            saved = super().save_model()
            if self.online is not None:
                from ultralytics.utils.torch_utils import unwrap_model

                state = {
                    "epoch": self.epoch,
                    "updates": self.ema.updates,
                    "student": unwrap_model(self.model).state_dict(),
                    "teacher": self.ema.ema.state_dict(),
                }
                torch.save(state, self.wdir / "online.pt")
            return saved

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
                "epoch": self.epoch + 1,
                "rank": max(RANK, 0),
                "pid": os.getpid(),
                "images": len(seen),
                "images_digest": hashlib.blake2b("\n".join(seen).encode(), digest_size=16).hexdigest(),
                "weights_digest": parameters_digest(unwrap_model(self.model)),
            }
            if self.online is not None:
                record["teacher_digest"] = parameters_digest(self.ema.ema)
                record["pseudo_boxes_per_image"] = self.online.epoch_stats()
                record["resumed_after_epoch"] = self.online_resumed
            folder = self.save_dir / "ranks"
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / f"rank{max(RANK, 0)}.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    return RayDetectionTrainer


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
