"""Ultralytics adapter for batched inference on pre-letterboxed images.

Uses Ultralytics' own `AutoBackend` (loads `.pt`, fuses, half precision on GPU) and its
`non_max_suppression`, which handles end-to-end heads (YOLO26) and NMS heads (YOLO11) alike.
A `.yaml` builds an untrained model (tests, offline); `s3://` weights are copied to the
node-local cache first. Checkpoints are pickles: load them only from locations you trust.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ssl_ray.config import StorageConfig
from ssl_ray.errors import ConfigError


def resolve_weights(weights: str, cache_dir: str, storage: StorageConfig) -> str:
    """A local path (or a bare Ultralytics name / .yaml) for `weights`.

    S3 checkpoints are copied into `<cache_dir>/weights/<hash of uri, size, mtime>.pt`: a new
    object under the same key gets a new copy, and no key can steer the path.
    """
    if not weights.startswith("s3://"):
        return weights
    import hashlib

    from ssl_ray.storage import Store

    folder, _, name = weights.rpartition("/")
    store = Store(folder, storage)
    info = store.fs.get_file_info(store.path(name))
    stamp = f"{store.uri_of(name)}|{info.size}|{info.mtime_ns}"
    digest = hashlib.blake2b(stamp.encode(), digest_size=16).hexdigest()
    target = Path(cache_dir).expanduser() / "weights" / f"{digest}.pt"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{digest}.{os.getpid()}.tmp")
        tmp.write_bytes(store.read_bytes(name))
        os.replace(tmp, target)
    return str(target)


def load_yolo(weights: str, work_dir: str):
    """`ultralytics.YOLO(weights)` with a clear error for a missing or unloadable checkpoint."""
    from ssl_ray.runtime import prepare_ultralytics

    ultralytics = prepare_ultralytics(work_dir)
    try:
        return ultralytics.YOLO(weights, task="detect")
    except Exception as e:  # Ultralytics raises many types (FileNotFoundError, ConnectionError, ...)
        raise ConfigError(f"model.weights: cannot load {weights!r}: {type(e).__name__}: {str(e)[:200]}") from None


class Teacher:
    """A detector answering `predict(uint8 NHWC letterboxed batch) -> [(k, 6) xyxy, score, cls]`."""

    def __init__(self, weights: str, work_dir: str, *, device: str | None = None, threads: int | None = None):
        import torch
        from ultralytics.nn.autobackend import AutoBackend

        model = load_yolo(weights, work_dir)
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.backend = AutoBackend(model=model.model, device=self.device, fp16=self.device.type == "cuda",
                                   fuse=True, verbose=False)
        self.backend.eval()
        self.names = [self.backend.names[i] for i in sorted(self.backend.names)]

    def predict(self, images: np.ndarray, score_floor: float, max_det: int = 300) -> list[np.ndarray]:
        import torch
        from ultralytics.utils import nms

        images = pad_to_stride(images, int(max(self.backend.stride, 1)))
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2)
            x = x.half() if self.backend.fp16 else x.float()
            out = self.backend(x / 255.0)
            dets = nms.non_max_suppression(out, score_floor, 0.7, max_det=max_det, nc=0, end2end=self.backend.end2end)
        return [d.float().cpu().numpy() for d in dets]


def pad_to_stride(images: np.ndarray, stride: int) -> np.ndarray:
    """A batch (N, H, W, 3) padded at the bottom and right (grey, as a letterbox) to a multiple
    of the model's stride; pixel coordinates are unchanged. The same array when it fits."""
    from ssl_ray.boxes import PAD_VALUE

    h, w = images.shape[1:3]
    ph, pw = -h % stride, -w % stride
    if not ph and not pw:
        return images
    out = np.full((images.shape[0], h + ph, w + pw, images.shape[3]), PAD_VALUE, images.dtype)
    out[:, :h, :w] = images
    return out
