"""`label.decode: gpu`: JPEGs decoded in the inference actor on its device (here the CPU, the
same torchvision code path as nvJPEG's up to the decoder): the canvases match the decode
tasks' ones, a JPEG neither decoder reads is quarantined alone with the CPU path's reason,
and every item comes out of the actor as it would with `label.decode: cpu`."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from ssl_ray.adapters.decode import apply_view, device_canvases, orient
from ssl_ray.config import PoolConfig, load_config
from ssl_ray.core import consistency
from ssl_ray.io.images import BadImage, decode_letterboxed, jpeg_header
from ssl_ray.io.items import ENCODED, LoadOptions, load_items

DEMO = Path(__file__).parents[1] / "ssl_ray" / "configs" / "demo.yaml"
NAMES = ["circle", "square", "triangle"]


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like image: gradients and a few flat blocks (noise would make any two
    resamplers disagree)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1)
    for _ in range(4):
        x0, y0 = rng.integers(0, width // 2), rng.integers(0, height // 2)
        image[y0 : y0 + height // 4, x0 : x0 + width // 4] = rng.integers(0, 255, 3)
    return image.astype(np.uint8)


def jpeg(image: np.ndarray, orientation: int = 1, **kw) -> bytes:
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=92, exif=exif, **kw)
    return buf.getvalue()


def unreadable_scan(data: bytes) -> bytes:
    """A JPEG whose header reads but whose scan names a component the frame does not have:
    libjpeg (Pillow, torchvision) and nvJPEG refuse to decode it."""
    sos = data.index(b"\xff\xda")
    return data[: sos + 5] + b"\x09" + data[sos + 6 :]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_turns_an_image_as_pillow_does(orientation):
    data = jpeg(photo(40, 24), orientation)
    stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # as decoded, not turned
    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    turned = orient(torch.from_numpy(stored.copy()).permute(2, 0, 1), orientation).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(turned, shown)


def test_jpeg_header_is_the_displayed_size_or_none_for_the_cpu_path():
    data = jpeg(photo(64, 48))
    assert jpeg_header(data) == (64, 48, 1)
    assert jpeg_header(jpeg(photo(64, 48), 6)) == (48, 64, 6)  # turned by 90 degrees
    assert jpeg_header(data[: len(data) // 2]) is None  # truncated: only a full decode says so
    buf = io.BytesIO()
    Image.fromarray(photo(64, 48)).save(buf, "PNG")
    assert jpeg_header(buf.getvalue()) is None  # not a JPEG: decoded on CPU
    with pytest.raises(BadImage, match="empty"):
        jpeg_header(b"")
    with pytest.raises(BadImage, match="too_large"):
        jpeg_header(data, max_pixels=100)


@pytest.mark.parametrize("stride", [0, 32])
def test_device_canvases_match_the_cpu_canvases(stride):
    """Shape and placement exactly, pixels within a few levels (the CPU path decodes large
    JPEGs at a reduced DCT scale; the device resizes with an antialiased bilinear)."""
    cases = [(photo(400, 300, 1), 1), (photo(300, 400, 2), 6), (photo(90, 50, 3), 1), (photo(256, 160, 4), 3)]
    encoded = [jpeg(image, o) for image, o in cases]
    headers = [jpeg_header(data) for data in encoded]
    widths, heights, orientations = zip(*headers)
    canvases = device_canvases(encoded, orientations, widths, heights, 128, stride, "cpu")
    for data, canvas in zip(encoded, canvases, strict=True):
        cpu, _, _, _ = decode_letterboxed(data, 128, stride)
        assert canvas.dtype == torch.uint8 and tuple(canvas.shape) == cpu.shape
        assert np.abs(canvas.numpy().astype(int) - cpu.astype(int)).mean() < 3.0


def test_one_undecodable_jpeg_fails_alone_on_the_device():
    good = [jpeg(photo(64, 48, seed)) for seed in range(3)]
    bad = unreadable_scan(good[0])
    assert jpeg_header(bad) == (64, 48, 1)  # it passes the decode task's header check
    made = device_canvases([good[0], bad, good[1], good[2]], [1] * 4, [64] * 4, [48] * 4, 64, 32, "cpu")
    assert [c is None for c in made] == [False, True, False, False]
    with pytest.raises(BadImage, match="corrupt"):  # and the CPU path's verdict is a reason
        decode_letterboxed(bad, 64, 32)


@pytest.mark.parametrize("spec", ["flip", "scale:0.5"])
def test_views_of_device_canvases_match_numpy_views(spec):
    images = np.stack([photo(96, 64, seed) for seed in range(2)])
    (view,) = consistency.parse_views([spec], 96, 64)
    ours = apply_view(torch.from_numpy(images), view).numpy()
    theirs = consistency.apply_view(images, view)
    assert ours.shape == theirs.shape
    assert np.abs(ours.astype(int) - theirs.astype(int)).mean() < 1.0


def items(tmp_path: Path, device_decode: bool) -> dict:
    """One decoded batch of a pool: JPEGs (one turned by EXIF), one whose scan is unreadable,
    a truncated one, a PNG."""
    from ssl_ray.stages.label_workers import columns

    files = {f"photo{i}.jpg": jpeg(photo(160, 90, i), 6 if i == 1 else 1) for i in range(4)}
    files["unreadable_scan.jpg"] = unreadable_scan(files["photo0.jpg"])
    files["truncated.jpg"] = files["photo2.jpg"][:300]
    buf = io.BytesIO()
    Image.fromarray(photo(120, 80, 9)).save(buf, "PNG")
    files["still.png"] = buf.getvalue()
    opts = LoadOptions(imgsz=64, pool=PoolConfig(), stride=32, device_decode=device_decode)
    rows = []
    for name, data in files.items():
        rows += load_items(f"mem://{name}", len(data), opts, lambda uri, data=data: data)
    return columns(rows)


def test_a_corrupt_jpeg_in_a_device_decoded_batch_is_quarantined_alone(tmp_path, teachers):
    from ssl_ray.stages.label_workers import Predict

    on_device, on_cpu = items(tmp_path, True), items(tmp_path, False)
    travelled = {u.rsplit("/", 1)[1] for u, e in zip(on_device["uri"], on_device["encoded"]) if len(e)}
    assert travelled == {"photo0.jpg", "photo1.jpg", "photo2.jpg", "photo3.jpg", "unreadable_scan.jpg"}
    assert all(on_device["image"][i].shape == ENCODED.shape for i, e in enumerate(on_device["encoded"]) if len(e))
    assert not any(len(e) for e in on_cpu["encoded"])

    tables = {}
    for decode, batch in (("gpu", on_device), ("cpu", on_cpu)):
        cfg = load_config(DEMO, ["model.imgsz=64", f"label.decode={decode}", "label.score_floor=0.0"])
        tables[decode] = Predict(teachers["yolo26n"], cfg, NAMES)(batch).to_pylist()
    gpu, cpu = tables["gpu"], tables["cpu"]
    reasons = {r["uri"].rsplit("/", 1)[1]: r["reject_reason"] for r in gpu if r["reject_reason"]}
    assert reasons == {"unreadable_scan.jpg": "corrupt", "truncated.jpg": "corrupt"}
    assert [r["uri"] for r in gpu] == [r["uri"] for r in cpu]  # every item, once, in order
    keys = ("image_id", "width", "height", "reject_reason", "reject_detail")
    assert [{k: r[k] for k in keys} for r in gpu] == [{k: r[k] for k in keys} for r in cpu]
    assert all(r["boxes"] for r in gpu if not r["reject_reason"])  # a score floor of 0: each finds boxes
