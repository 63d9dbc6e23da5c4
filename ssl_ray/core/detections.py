"""`Detections`: one image's detections on its canvas, the contract between the label
stage's steps (teacher -> consistency views -> box refiner -> raw Parquet rows).

Numpy arrays, validated once (after roboflow/supervision's `Detections`), filtered with masks:
`dets[dets.score >= 0.5]`. Boxes are xyxy pixels on the letterboxed canvas; `ssl_ray.core.raw`
maps them back to the contract's normalized xywh on the original image.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Detections:
    xyxy: np.ndarray  # (k, 4) float64, canvas pixels
    score: np.ndarray  # (k,) float64
    cls: np.ndarray  # (k,) int64, class ids
    agree: np.ndarray | None = None  # (k,) share of consistency views that agreed; None: no view ran

    def __post_init__(self):
        xyxy = np.asarray(self.xyxy, dtype=np.float64).reshape(-1, 4)
        k = len(xyxy)
        score = np.asarray(self.score, dtype=np.float64).reshape(-1)
        cls = np.asarray(self.cls).reshape(-1)
        if len(score) != k or len(cls) != k:
            raise ValueError(f"Detections: {k} boxes, {len(score)} scores and {len(cls)} classes")
        if k and (cls != np.round(cls)).any():
            raise ValueError("Detections: class ids must be whole numbers")
        agree = None if self.agree is None else np.asarray(self.agree, dtype=np.float64).reshape(-1)
        if agree is not None and len(agree) != k:
            raise ValueError(f"Detections: {k} boxes and {len(agree)} agreement values")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "score", score)
        object.__setattr__(self, "cls", cls.astype(np.int64))
        object.__setattr__(self, "agree", agree)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))

    @classmethod
    def from_array(cls, array: np.ndarray) -> Detections:
        """From a (k, 6) array of x1, y1, x2, y2, score, class (Ultralytics' NMS output)."""
        a = np.asarray(array, dtype=np.float64).reshape(-1, 6)
        return cls(a[:, :4], a[:, 4], np.round(a[:, 5]))

    def __len__(self) -> int:
        return len(self.score)

    def __getitem__(self, index) -> Detections:
        """The detections selected by a boolean mask, an index array or a slice."""
        return Detections(
            self.xyxy[index], self.score[index], self.cls[index], None if self.agree is None else self.agree[index]
        )

    def with_boxes(self, xyxy: np.ndarray) -> Detections:
        """The same detections with other boxes (e.g. refined ones)."""
        return replace(self, xyxy=xyxy)
