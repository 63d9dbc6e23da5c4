"""Generated video clips for the tests (MJPG in AVI: every OpenCV build writes it)."""

from __future__ import annotations

import numpy as np


def write_clip(path, frames: list[np.ndarray], fps: float = 10.0) -> str:
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


def stop_and_go(n_still: int = 8) -> list[np.ndarray]:
    """A textured street stand-in: 4 moving frames, a stop (`n_still` frames, sensor noise
    only), a small bright object (2 % of the frame) appearing and staying, then moving on."""
    rng = np.random.default_rng(0)
    scene = rng.integers(40, 200, (200, 480, 3), np.uint8)
    scene = np.repeat(np.repeat(scene[::8, ::8], 8, 0), 8, 1)[:200, :480]  # blocks, not pixel noise

    def view(x: int, obj: bool = False) -> np.ndarray:
        f = scene[:, x : x + 320].astype(np.int16) + rng.integers(-2, 3, (200, 320, 3))
        if obj:
            f[90:115, 150:170] = 255
        return np.clip(f, 0, 255).astype(np.uint8)

    moving = [view(x) for x in (0, 12, 24, 36)]
    still = [view(48) for _ in range(n_still)]
    with_object = [view(48, obj=True) for _ in range(3)]
    on = [view(x, obj=True) for x in (60, 72)]
    return moving + still + with_object + on
