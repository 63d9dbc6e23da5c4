"""The inference adapter: YOLO26 (end-to-end) and YOLO11 (NMS) checkpoints, batched."""

import numpy as np
import pytest

from ssl_ray.adapters.teacher import Teacher, load_yolo
from ssl_ray.core.geometry import pad_to_stride
from ssl_ray.errors import ConfigError


@pytest.mark.parametrize("name", ["yolo26n", "yolo11n"])
def test_teacher_predicts_on_letterboxed_batches(teachers, tmp_path, name):
    teacher = Teacher(teachers[name], str(tmp_path), threads=1)
    assert teacher.names == ["circle", "square", "triangle"]
    batch = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    dets = teacher.predict(batch, score_floor=0.0)
    assert len(dets) == 3 and all(d.xyxy.shape == (len(d), 4) for d in dets)
    assert all((d.score >= 0).all() and (d.cls >= 0).all() and (d.cls < 3).all() for d in dets)


def test_teacher_takes_a_canvas_off_its_stride(teachers, tmp_path):
    """A canvas of 144 px (model.imgsz 144) is not a multiple of the model's stride of 32."""
    teacher = Teacher(teachers["yolo26n"], str(tmp_path), threads=1)
    batch = np.random.default_rng(0).integers(0, 255, (2, 144, 144, 3), dtype=np.uint8)
    assert len(teacher.predict(batch, score_floor=0.0)) == 2


@pytest.mark.parametrize(
    "shape, stride, padded",
    [
        ((1, 64, 64, 3), 32, (1, 64, 64, 3)),  # fits: the same array
        ((2, 144, 144, 3), 32, (2, 160, 160, 3)),
        ((1, 65, 100, 3), 8, (1, 72, 104, 3)),
    ],
)
def test_pad_to_stride_pads_bottom_and_right_in_grey(shape, stride, padded):
    images = np.full(shape, 7, np.uint8)
    out = pad_to_stride(images, stride)
    assert out.shape == padded
    if padded == shape:
        assert out is images
    else:
        assert (out[:, : shape[1], : shape[2]] == 7).all()  # the image stays where it was
        assert (out[:, shape[1] :] == 114).all() and (out[:, :, shape[2] :] == 114).all()


@pytest.mark.s3
def test_s3_weights_are_cached_by_content_stamp(teachers, tmp_path, bucket, storage_cfg):
    from pathlib import Path

    from ssl_ray.adapters.teacher import resolve_weights
    from ssl_ray.io.storage import Store

    store = Store(f"s3://{bucket}/w", storage_cfg)
    store.write_bytes("best.pt", Path(teachers["yolo26n"]).read_bytes())
    first = resolve_weights(f"s3://{bucket}/w/best.pt", str(tmp_path), storage_cfg)
    assert Path(first).parent == tmp_path / "weights" and Path(first).read_bytes() == store.read_bytes("best.pt")
    assert resolve_weights(f"s3://{bucket}/w/best.pt", str(tmp_path), storage_cfg) == first
    store.write_bytes("best.pt", Path(teachers["yolo11n"]).read_bytes())  # new weights, same key
    second = resolve_weights(f"s3://{bucket}/w/best.pt", str(tmp_path), storage_cfg)
    assert second != first and Path(second).read_bytes() == Path(teachers["yolo11n"]).read_bytes()


def test_missing_checkpoint_is_a_clear_config_error(tmp_path):
    with pytest.raises(ConfigError, match="model.weights: cannot load"):
        load_yolo(str(tmp_path / "nope.pt"), str(tmp_path))
