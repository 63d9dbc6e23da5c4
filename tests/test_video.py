"""Video frames: sampling and the near-duplicate filter (`pool.video_min_change`)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from clips import stop_and_go, write_clip

from ssl_ray.config import PoolConfig
from ssl_ray.io.pool import LoadOptions, load_items
from ssl_ray.io.video import iter_frames, largest_change, thumbnail


def frames_of(path: str, min_change: float | None, every_n: int = 1) -> list[dict]:
    opts = LoadOptions(imgsz=64, pool=PoolConfig(video_every_n=every_n, video_min_change=min_change))
    return list(load_items(path, 1, opts, read_bytes=None, kind="video"))


def test_thumbnail_change_sees_a_small_object_and_not_noise():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (720, 1280, 3), np.uint8)
    noisy = np.clip(base.astype(np.int16) + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
    assert thumbnail(base).shape == (16, 16)
    assert largest_change(thumbnail(base), thumbnail(base)) == 0
    assert largest_change(thumbnail(base), thumbnail(noisy)) <= 2
    pedestrian = base.copy()
    pedestrian[300:380, 600:640] = 255  # 0.35 % of a 720p frame, inside one cell
    assert largest_change(thumbnail(base), thumbnail(pedestrian)) >= 15


def test_near_duplicate_frames_are_skipped_with_a_pointer_and_every_frame_is_accounted(tmp_path):
    clip = write_clip(tmp_path / "drive.avi", stop_and_go())
    every = frames_of(clip, None)
    assert len(every) == 17 and not any(r["reject_reason"] for r in every)

    rows = frames_of(clip, 8)
    assert [r["uri"] for r in rows] == [r["uri"] for r in every]  # one row per sampled frame, in order
    kept = [r["frame_index"] for r in rows if not r["reject_reason"]]
    skipped = [r for r in rows if r["reject_reason"]]
    assert kept == [0, 1, 2, 3, 4, 12, 15, 16]  # moving; the stop's first frame; the object; moving on
    assert {r["reject_reason"] for r in skipped} == {"near_duplicate"}
    for r in skipped:  # each names the last kept frame before it
        index = int(r["uri"].rsplit("=", 1)[1])
        pointer = int(re.search(r"#frame=(\d+)$", r["reject_detail"]).group(1))
        assert pointer == max(k for k in kept if k < index)
        assert r["reject_detail"].startswith("changed at most ")
    # the kept frames are exactly those of the unfiltered run (same ids, same pixels)
    same = {r["image_id"]: r["image"] for r in every}
    assert all(np.array_equal(same[r["image_id"]], r["image"]) for r in rows if not r["reject_reason"])


def test_a_real_video_keeps_its_moving_frames(bikes_mp4):
    """bikes.mp4 (a real street clip, 250 frames at 25 fps): every 10th frame moves enough to
    be kept at the suggested threshold; at every frame, some are near-identical."""
    sampled = frames_of(str(bikes_mp4), 8, every_n=10)
    assert len(sampled) == 25 and not any(r["reject_reason"] for r in sampled)
    dense = frames_of(str(bikes_mp4), 8, every_n=1)
    skipped = sum(r["reject_reason"] == "near_duplicate" for r in dense)
    assert len(dense) == 250 and 0 < skipped < 250


def test_frame_sampling_is_unchanged_by_the_filter_being_off(bikes_mp4):
    assert [i for i, _, _ in iter_frames(str(bikes_mp4), 30, None)] == [
        r["frame_index"] for r in frames_of(str(bikes_mp4), None, 30)
    ]


@pytest.mark.parametrize("value", [-1, 256])
def test_the_threshold_is_range_checked(value):
    from ssl_ray.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="video_min_change"):
        load_config(None, [f"pool.video_min_change={value}"])
