"""Video frames: sampling, chunks (a long video split into frame ranges decoded apart),
key frames, decoder-side resize, and the near-duplicate filter (`pool.video_min_change`)."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np
import pytest
from clips import stop_and_go, write_clip

from ssl_ray.config import PoolConfig
from ssl_ray.io.items import LoadOptions, load_items
from ssl_ray.io.pool import video_chunks
from ssl_ray.io.video import TO_END, VideoInfo, iter_frames, largest_change, plan_chunks, thumbnail


def frames_of(path: str, min_change: float | None, every_n: int = 1) -> list[dict]:
    opts = LoadOptions(imgsz=64, pool=PoolConfig(video_every_n=every_n, video_min_change=min_change))
    return list(load_items(path, 1, opts, read_bytes=None, kind="video"))


def chunked(path: str, imgsz: int = 64, read_bytes=None, **pool) -> tuple[list[tuple[int, int]], list[dict]]:
    """The chunk plan of a video and the rows of all its chunks, in order (as the label
    stage's decode tasks produce them, one chunk each)."""
    uri, size = str(path), Path(path).stat().st_size
    cfg = PoolConfig(**pool)
    opts = LoadOptions(imgsz=imgsz, pool=cfg)
    plan = video_chunks(uri, cfg, contextlib.nullcontext)
    rows = [r for c in plan for r in load_items(uri, size, opts, read_bytes, "video", chunk=c)]
    return plan, rows


@pytest.fixture(scope="module")
def bunny_mp4(bikes_mp4):
    """bigbuckbunny.mp4 from the same wheel: 132 frames of 1280x720 H.264 at 25 fps."""
    return bikes_mp4.parent / "bigbuckbunny.mp4"


PROVENANCE = (
    "image_id",
    "uri",
    "video_uri",
    "frame_index",
    "timestamp_s",
    "width",
    "height",
    "ratio",
    "pad_x",
    "pad_y",
)


@pytest.mark.parametrize(
    ("info", "step", "samples", "plan"),
    [
        (VideoInfo(250, 25.0, 640, 272, True), 10, 10, [(0, 100), (100, 200), (200, TO_END)]),
        (VideoInfo(250, 25.0, 640, 272, True), 10, 25, [(0, TO_END)]),  # exactly one chunk's worth
        (VideoInfo(251, 25.0, 640, 272, True), 10, 25, [(0, 250), (250, TO_END)]),
        (VideoInfo(0, 25.0, 640, 272, True), 10, 5, [(0, TO_END)]),  # the container does not say
        (VideoInfo(250, 25.0, 640, 272, False), 10, 5, [(0, TO_END)]),  # no timestamps: cannot seek
        (None, 10, 5, [(0, TO_END)]),  # not probed: one chunk, whose decode reports the problem
    ],
)
def test_chunk_plans_cover_the_video_on_sampling_boundaries(info, step, samples, plan):
    assert plan_chunks(info, step, samples) == plan


@pytest.mark.parametrize(("every_n", "samples"), [(1, 7), (10, 3), (30, 1), (7, 64)])
def test_chunks_give_the_frames_and_provenance_of_one_whole_decode(bikes_mp4, bunny_mp4, every_n, samples):
    """Each chunk seeks to its first frame in a separate decode; together they yield the
    frames of a single pass over the video, exactly once, with the same ids and pixels."""
    for video in (bikes_mp4, bunny_mp4):
        whole = frames_of(str(video), None, every_n)
        plan, rows = chunked(video, video_every_n=every_n, video_chunk_samples=samples)
        assert len(plan) == -(-len(whole) // samples)
        assert [[r[k] for k in PROVENANCE] for r in rows] == [[r[k] for k in PROVENANCE] for r in whole]
        assert all(np.array_equal(a["image"], b["image"]) for a, b in zip(rows, whole, strict=True))
        assert len({r["image_id"] for r in rows}) == len(rows)


def test_a_frame_is_numbered_as_opencv_counts_it(bikes_mp4):
    """Frame indices come from timestamps; on constant-rate video they are decode order, the
    frame OpenCV reads at that position, pixel for pixel."""
    import cv2

    cap = cv2.VideoCapture(str(bikes_mp4))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 137)
    ok, bgr = cap.read()
    cap.release()
    ((index, ts, rgb),) = list(iter_frames(str(bikes_mp4), 1, None, 137, 138))
    assert ok and index == 137 and ts == pytest.approx(137 / 25) and np.array_equal(rgb, bgr[..., ::-1])


def test_key_frames_only_are_decoded_when_asked(bikes_mp4):
    import av

    with av.open(str(bikes_mp4)) as c:
        keys = [round(p.pts * p.time_base * 25) for p in c.demux(video=0) if p.is_keyframe and p.pts is not None]
    plan, rows = chunked(bikes_mp4, video_keyframes=True, video_every_n=1)
    assert plan == [(0, TO_END)] and [r["frame_index"] for r in rows] == sorted(keys) == [0, 30, 76, 137, 187, 242]


def test_large_frames_are_resized_by_the_decoder_onto_the_same_letterbox(bunny_mp4):
    """1280x720 into a 160 canvas: the decoder converts straight to 160x90 (never a full-size
    RGB frame), area-averaged as Ultralytics' loader shrinks images; the canvas matches
    shrinking the full frame that way, and boxes map back the same way."""
    import cv2

    from ssl_ray.io.images import letterbox

    _, rows = chunked(bunny_mp4, imgsz=160, video_every_n=40)
    full = [f for _, _, f in iter_frames(str(bunny_mp4), 40, None)]
    assert len(rows) == len(full) == 4
    for row, frame in zip(rows, full, strict=True):
        _, lb = letterbox(frame, 160)
        assert (row["ratio"], row["pad_x"], row["pad_y"]) == (lb.ratio, lb.pad_x, lb.pad_y)
        assert (row["width"], row["height"]) == (1280, 720)
        top = int(lb.pad_y)
        area = cv2.resize(frame, (160, 90), interpolation=cv2.INTER_AREA)
        # (the decoder scales the YUV planes, chroma at half size, before converting: ~2 levels apart)
        assert np.abs(row["image"][top : top + 90].astype(int) - area.astype(int)).mean() < 2.5


def test_an_s3_video_read_through_a_file_gives_the_same_rows(bikes_mp4):
    """The label stage opens an S3 video for ranged reads; readers that only read whole files
    get it in memory. Either way the rows equal the local file's."""
    local = frames_of(str(bikes_mp4), None, 25)
    opts = LoadOptions(imgsz=64, pool=PoolConfig(video_every_n=25, video_chunk_samples=4))
    size = bikes_mp4.stat().st_size

    @contextlib.contextmanager
    def ranged(uri):
        with open(bikes_mp4, "rb") as f:
            yield f

    plan = video_chunks("s3://b/bikes.mp4", opts.pool, ranged)
    for reader in ({"open_file": ranged}, {"read_bytes": lambda uri: bikes_mp4.read_bytes()}):
        rows = [
            r
            for c in plan
            for r in load_items(
                "s3://b/bikes.mp4",
                size,
                opts,
                reader.get("read_bytes"),
                "video",
                open_file=reader.get("open_file"),
                chunk=c,
            )
        ]
        assert len(plan) == 3 and [r["image_id"] for r in rows] == [r["image_id"] for r in local]


def test_an_unreadable_video_is_one_reject_whatever_its_chunks(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    plan, rows = chunked(bad)
    assert plan == [(0, TO_END)] and [r["reject_reason"] for r in rows] == ["video_unreadable"]
    # a plan made before the file broke: the later chunks say nothing, the first says why
    opts = LoadOptions(imgsz=64, pool=PoolConfig())
    later = [
        r for c in [(0, 30), (30, 60), (60, TO_END)] for r in load_items(str(bad), 10, opts, None, "video", chunk=c)
    ]
    assert [r["reject_reason"] for r in later] == ["video_unreadable"]


def test_near_duplicate_accounting_is_conserved_over_chunks(tmp_path):
    """Chunks of 3 sampled frames: each chunk keeps its first frame (the comparison does not
    cross a chunk), and every sampled frame is still one row, kept or skipped."""
    clip = write_clip(tmp_path / "drive.avi", stop_and_go())
    plan, rows = chunked(clip, video_every_n=1, video_min_change=8, video_chunk_samples=3)
    assert len(plan) == 6 and [
        r["frame_index"] if r["frame_index"] is not None else int(r["uri"].rsplit("=", 1)[1]) for r in rows
    ] == list(range(17))
    kept = [r["frame_index"] for r in rows if not r["reject_reason"]]
    assert {0, 3, 6, 9, 12, 15} <= set(kept) and len(kept) < 17


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
