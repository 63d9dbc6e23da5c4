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
from ssl_ray.core.detections import Detections
from ssl_ray.core.geometry import PAD_VALUE, pad_to_stride
from ssl_ray.errors import ConfigError


def resolve_weights(weights: str, cache_dir: str, storage: StorageConfig) -> str:
    """A local path (or a bare Ultralytics name / .yaml) for `weights`.

    S3 checkpoints are copied into `<cache_dir>/weights/<hash of uri, size, mtime>.pt`: a new
    object under the same key gets a new copy, and no key can steer the path.
    """
    if not weights.startswith("s3://"):
        return weights
    import hashlib

    from ssl_ray.io.storage import Store

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
    from ssl_ray.adapters.runtime import prepare_ultralytics

    ultralytics = prepare_ultralytics(work_dir)
    try:
        return ultralytics.YOLO(weights, task="detect")
    except Exception as e:  # Ultralytics raises many types (FileNotFoundError, ConnectionError, ...)
        raise ConfigError(f"model.weights: cannot load {weights!r}: {type(e).__name__}: {str(e)[:200]}") from None


class Teacher:
    """A detector answering `predict(uint8 NHWC letterboxed batch) -> [Detections per image]`."""

    def __init__(self, weights: str, work_dir: str, *, device: str | None = None, threads: int | None = None):
        import torch
        from ultralytics.nn.autobackend import AutoBackend

        model = load_yolo(weights, work_dir)
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.backend = AutoBackend(
            model=model.model, device=self.device, fp16=self.device.type == "cuda", fuse=True, verbose=False
        )
        self.backend.eval()
        self.names = [self.backend.names[i] for i in sorted(self.backend.names)]

    def predict(self, images, score_floor: float, max_det: int = 300) -> list[Detections]:
        """Detections on an (N, H, W, 3) uint8 batch: a numpy array, or a tensor (e.g. canvases
        decoded on the device, `adapters.decode`)."""
        import torch
        from ultralytics.utils import nms

        with torch.inference_mode():
            out = self.backend(self._input(images))
            dets = nms.non_max_suppression(out, score_floor, 0.7, max_det=max_det, nc=0, end2end=self.backend.end2end)
            counts = [len(d) for d in dets]
            every = torch.cat(dets).float().cpu().numpy() if dets else np.zeros((0, 6))  # one copy to the host
        return [Detections.from_array(part) for part in np.split(every, np.cumsum(counts)[:-1])]

    def _input(self, images):
        """The model's input: (N, 3, H, W) on the device, in [0, 1], padded to its stride."""
        import torch
        import torch.nn.functional as F

        stride = int(max(self.backend.stride, 1))
        if isinstance(images, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(pad_to_stride(images, stride)))
            if self.device.type == "cuda":  # a pinned upload that does not block the host
                x = x.pin_memory().to(self.device, non_blocking=True)
            x = x.permute(0, 3, 1, 2)
        else:
            x = images.to(self.device).permute(0, 3, 1, 2)
            ph, pw = -x.shape[2] % stride, -x.shape[3] % stride
            if ph or pw:  # at the bottom and right, as `pad_to_stride`
                x = F.pad(x, (0, pw, 0, ph), value=PAD_VALUE)
        x = x.half() if self.backend.fp16 else x.float()
        return x / 255.0


def preflight_weights(cfg, weights: str, names: list[str] | None, role: str) -> list[str]:
    """Before any work: `weights` exists and loads as an Ultralytics detection model; its
    class names. As a teacher (`role="teacher"`: labeling, `rounds.round0: evaluate`) it must
    predict the labeled set's `names`; as a training start (`role="init"`) any classes do
    (Ultralytics re-heads it). A `.yaml` is a model definition (a file, or one Ultralytics
    bundles, e.g. `yolo26n.yaml`). Raises one `ConfigError` naming the setting; downloads
    nothing and writes only into `output.cache_dir`."""
    import posixpath

    from ssl_ray.io.storage import Store

    where = "model.weights" if weights == cfg.model.weights else "--weights"
    if weights.startswith("s3://"):
        folder, _, name = weights.rpartition("/")
        if not Store(folder, cfg.storage).exists(name):
            raise ConfigError(f"{where}: {weights} does not exist")
    elif posixpath.splitext(weights)[1] not in (".yaml", ".yml") and not os.path.isfile(os.path.expanduser(weights)):
        raise ConfigError(
            f"{where}: {weights} is not a file here, and ssl_ray downloads nothing at run time: "
            f"download it once (e.g. Ultralytics' release assets) and give its path or an s3:// URI"
        )
    quiet = os.environ.get("YOLO_VERBOSE")
    os.environ["YOLO_VERBOSE"] = "False"  # this process's Ultralytics logs errors only (read at its import)
    try:
        model = load_yolo(resolve_weights(weights, cfg.output.cache_dir, cfg.storage), cfg.output.cache_dir)
    finally:
        os.environ.pop("YOLO_VERBOSE") if quiet is None else os.environ.update(YOLO_VERBOSE=quiet)
    if model.task != "detect":
        raise ConfigError(f"{where}: {weights} is a {model.task} model; ssl_ray trains detectors")
    found = [model.names[i] for i in sorted(model.names)]
    if role == "teacher" and names is not None and found != list(names):
        raise ConfigError(
            f"{where}: the teacher {weights} predicts classes {found[:10]}, but the labeled set has "
            f"{list(names)}: train the teacher on the labeled set first"
        )
    return found
