"""Image checks: each kind of bad bytes gets its own reason; odd-but-valid images decode."""

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from ssl_ray.io.images import BadImage, decode_rgb, inspect_image, sniff_ext


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


RGB = Image.new("RGB", (40, 30), (10, 200, 30))


def png_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")  # IHDR width, height
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # with a valid CRC
    return bytes(data)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"this is text, not an image", "not_image"),
        (encode(RGB, "JPEG")[:120], "corrupt"),
        (png_claiming(100_000, 100_000), "too_large"),
        (b"\x00\x00\x00\x18ftypheic" + bytes(32), "unsupported_format"),
        (b"\x89PNG\r\n\x1a\n" + bytes(40), "corrupt"),  # a PNG signature, then garbage
        (b"BMW owners' club newsletter, issue 7", "not_image"),  # "BM" text is not a BMP
    ],
)
def test_bad_bytes_have_a_reason(data, reason):
    import ultralytics  # noqa: F401  registers extra PIL plugins: classification must not change

    with pytest.raises(BadImage) as err:
        inspect_image(data, max_pixels=10_000_000)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    "img, fmt, ext",
    [
        (RGB, "JPEG", "jpg"),
        (RGB, "PNG", "png"),
        (RGB, "BMP", "bmp"),
        (RGB, "WEBP", "webp"),
        (RGB, "TIFF", "tif"),
        (RGB, "GIF", "gif"),  # its first frame
        (Image.new("L", (40, 30), 99), "PNG", "png"),
        (Image.new("RGBA", (40, 30), (1, 2, 3, 100)), "PNG", "png"),
        (Image.new("CMYK", (40, 30), (1, 2, 3, 4)), "JPEG", "jpg"),
        (Image.new("I;16", (40, 30), 60000), "PNG", "png"),
    ],
)
def test_valid_images_decode_to_rgb(img, fmt, ext):
    data = encode(img, fmt)
    assert inspect_image(data) == (40, 30, ext)
    arr = decode_rgb(data)
    assert arr.shape == (30, 40, 3) and arr.dtype == np.uint8
    assert sniff_ext(data) == ext


def test_exif_rotation_gives_displayed_size():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: displayed portrait
    data = encode(RGB, "JPEG", exif=exif)
    assert inspect_image(data)[:2] == (30, 40)
    assert decode_rgb(data).shape == (40, 30, 3)


def test_pixel_limit_is_configurable():
    data = encode(RGB, "PNG")
    with pytest.raises(BadImage, match="too_large"):
        inspect_image(data, max_pixels=100)


@pytest.mark.parametrize("max_pixels", [10_000_000, 64_000_000])
def test_a_bomb_is_refused_by_the_configured_limit_before_decoding(max_pixels):
    """Above Pillow's own limit (2 x 89 M pixels) as below it, the reject names pool.max_pixels."""
    from PIL import Image as PILImage

    for side in (5_000, 100_000):  # 25 M pixels, and 10 G: past Pillow's error threshold
        with pytest.raises(BadImage) as err:
            inspect_image(png_claiming(side, side), max_pixels=max_pixels)
        if side * side > max_pixels:
            assert err.value.reason == "too_large"
            assert err.value.detail == f"{side}x{side} = {side * side} pixels, more than pool.max_pixels ({max_pixels})"
    assert PILImage.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's own setting is left as it was


def test_training_trees_hold_a_gif_as_a_png_of_its_first_frame():
    from ssl_ray.io.images import for_training

    data, ext = for_training(encode(RGB, "GIF"))
    assert ext == "png" and sniff_ext(data) == "png" and decode_rgb(data).shape == (30, 40, 3)
    jpeg = encode(RGB, "JPEG")
    assert for_training(jpeg) == (jpeg, "jpg")  # anything else: the same bytes


@pytest.mark.parametrize(
    "name, header, kind",
    [
        ("a/b.JPG", None, "image"),
        ("clip.mov", None, "video"),
        ("labels/x.txt", b"\xff\xd8\xff", None),  # a known non-media extension: never read
        ("frame_0001", encode(RGB, "PNG")[:16], "image"),  # no extension: the bytes say
        ("object-key", b"\x00\x00\x00\x18ftypmp42" + bytes(4), "video"),
        ("photo.heic", b"\x00\x00\x00\x18ftypheic" + bytes(4), None),  # ISO media, but not a video
        ("README", b"just text here..", None),
        ("empty", b"", None),
    ],
)
def test_what_a_pool_file_is(name, header, kind):
    from ssl_ray.io.pool import kind_of

    assert kind_of(name, lambda: header) == kind


@pytest.mark.parametrize(
    ("width", "height", "size", "canvas"),
    [
        (1280, 720, 640, (640, 384)),  # 16:9 video: Ultralytics' predict canvas
        (720, 1280, 640, (384, 640)),
        (4032, 3024, 640, (640, 480)),  # a 4:3 camera photo
        (640, 640, 640, (640, 640)),
        (100, 30, 64, (64, 32)),
    ],
)
def test_rect_canvases_are_ultralytics_predict_letterbox_and_boxes_map_back(width, height, size, canvas):
    """`label.canvas: rect` letterboxes as Ultralytics' predict does (LetterBox with auto=True,
    stride 32), pixel for pixel, and a box on the canvas maps back onto the original."""
    from ultralytics.data.augment import LetterBox

    from ssl_ray.core.geometry import to_normalized_xywh
    from ssl_ray.io.images import letterbox

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (height, width, 3), np.uint8)
    ours, lb = letterbox(image, size, stride=32)
    theirs = LetterBox((size, size), auto=True, stride=32)(image=image)
    assert ours.shape[1::-1] == canvas and np.array_equal(ours, theirs)
    truth = np.array([0.25, 0.5, 0.2, 0.4])  # normalized centre xywh on the original
    x, y, w, h = truth * [width, height, width, height]
    on_canvas = np.array([[x - w / 2, y - h / 2, x + w / 2, y + h / 2]]) * lb.ratio + [lb.pad_x, lb.pad_y] * 2
    np.testing.assert_allclose(to_normalized_xywh(on_canvas, lb, width, height)[0], truth, atol=1e-9)


def scene(width: int, height: int) -> Image.Image:
    """A gradient with a red block: something for a decode to get right or wrong."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:] = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    rgb[height // 5 : height // 2, width // 6 : width // 2] = (200, 30, 30)
    return Image.fromarray(rgb)


def with_orientation(img: Image.Image, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, fmt, exif=exif, **({"quality": 90} if fmt == "JPEG" else {}))


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("stride", [0, 32])
def test_a_large_jpeg_is_decoded_at_reduced_scale_onto_the_canvas_a_full_decode_gives(orientation, stride, monkeypatch):
    """A 1920x1080 JPEG for a 640 canvas is decoded at half scale, yet lands on the same canvas
    at the same placement, in its displayed orientation, with the full image's size: boxes map
    back exactly as before."""
    from PIL import JpegImagePlugin

    from ssl_ray.io.images import decode_letterboxed, letterbox

    scales = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        out = draft(self, mode, size)
        scales.append(self.decoderconfig[0] if out else 1)
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    data = with_orientation(scene(1920, 1080), "JPEG", orientation)
    full = decode_rgb(data)
    theirs, their_lb = letterbox(full, 640, stride)
    ours, lb, width, height = decode_letterboxed(data, 640, stride)
    assert scales == [2]  # 1920 / 640 = 3: the largest DCT scale that keeps >= the canvas
    assert (width, height) == (full.shape[1], full.shape[0]) and lb == their_lb and ours.shape == theirs.shape
    assert np.abs(ours.astype(int) - theirs).mean() < 1.5
    red = [np.argwhere((c[..., 0] > 150) & (c[..., 1] < 80)).mean(axis=0) for c in (ours, theirs)]
    np.testing.assert_allclose(red[0], red[1], atol=1.0)  # the object where a full decode puts it


@pytest.mark.parametrize(
    "data",
    [
        encode(scene(1000, 700), "JPEG", quality=90),  # < 2x the canvas: decoded at full size
        with_orientation(scene(1920, 1080), "PNG", 6),  # not a JPEG (and turned): decoded at full size
    ],
    ids=["small-jpeg", "png-turned"],
)
def test_an_image_decoded_at_full_size_gets_exactly_the_full_decode_canvas(data):
    from ssl_ray.io.images import decode_letterboxed, letterbox

    full = decode_rgb(data)
    theirs, their_lb = letterbox(full, 640)
    ours, lb, width, height = decode_letterboxed(data, 640)
    assert np.array_equal(ours, theirs) and lb == their_lb and (width, height) == (full.shape[1], full.shape[0])


def test_a_large_grey_jpeg_reduced_is_still_an_rgb_canvas():
    from ssl_ray.io.images import decode_letterboxed, letterbox

    data = encode(scene(1920, 1080).convert("L"), "JPEG", quality=90)
    ours, _, width, height = decode_letterboxed(data, 640)
    theirs, _ = letterbox(decode_rgb(data), 640)
    assert ours.shape == theirs.shape == (640, 640, 3) and (width, height) == (1920, 1080)
    assert np.abs(ours.astype(int) - theirs).mean() < 1.5
