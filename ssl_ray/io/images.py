"""Decode and check encoded images: the one place that decides what counts as a bad image.

`inspect_image` and `decode_rgb` raise `BadImage(reason, detail)`; the reasons are the fixed
vocabulary of `ssl_ray.core.schema.REASONS` that quarantine records and reports use.
`letterbox` places a decoded image on the square canvas the teacher sees.
"""

from __future__ import annotations

import io
import sys
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ssl_ray.core.geometry import PAD_VALUE, Letterbox, canvas_size, letterbox_params
from ssl_ray.core.schema import REASONS

# PIL format name -> file extension used in caches and YOLO trees.
FORMATS = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "WEBP": "webp", "TIFF": "tif", "GIF": "gif"}
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv"})


class BadImage(Exception):
    def __init__(self, reason: str, detail: str = ""):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail or REASONS[reason]}")
        self.reason = reason
        self.detail = detail or REASONS[reason]


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise BadImage("empty")
    limit = Image.MAX_IMAGE_PIXELS
    try:
        # Opening reads the header only. Pillow's own bomb check is off for it: the size is
        # checked against pool.max_pixels below, before anything is decoded.
        Image.MAX_IMAGE_PIXELS = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Only our formats: other plugins (e.g. HEIF, registered by some libraries) stay out.
            img = _pillow_open()(io.BytesIO(data), formats=list(FORMATS))
    except UnidentifiedImageError:
        ours = _our_format_by_signature(data)
        if ours:  # the right signature, but Pillow could not even read its header
            raise BadImage("corrupt", f"{ours} signature, unreadable header (e.g. a bad chunk checksum)") from None
        other = _known_other_format(data)
        if other:
            raise BadImage("unsupported_format", f"format {other}") from None
        raise BadImage("not_image", "not a recognized image format") from None
    except Image.DecompressionBombError as e:
        raise BadImage("too_large", str(e)[:200]) from None
    except (OSError, ValueError, SyntaxError) as e:
        if _our_format_by_signature(data) is None:  # a loose plugin match (e.g. text starting "BM")
            raise BadImage("not_image", f"not a recognized image format ({str(e)[:150]})") from None
        raise BadImage("corrupt", str(e)[:200]) from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if img.format not in FORMATS:
        raise BadImage("unsupported_format", f"format {img.format}")
    w, h = img.size
    if w * h > max_pixels:
        raise BadImage("too_large", f"{w}x{h} = {w * h} pixels, more than pool.max_pixels ({max_pixels})")
    if w <= 0 or h <= 0:
        raise BadImage("corrupt", f"size {w}x{h}")
    return img


def _pillow_open():
    """Pillow's own `Image.open`. Importing Ultralytics replaces it with a wrapper that, on an
    unidentified file, tries to pip-install and register a HEIF plugin: not in a labeling loop."""
    patches = sys.modules.get("ultralytics.utils.patches")
    if patches is not None and Image.open is getattr(patches, "image_open", None):
        return patches._image_open
    return Image.open


_OTHER_MAGIC = {
    b"8BPS": "PSD",
    b"\x00\x00\x01\x00": "ICO",
    b"\x00\x00\x00\x0cjP  ": "JPEG2000",
    b"\xffO\xffQ": "JPEG2000",
    b"%PDF": "PDF",
}


_OUR_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
}


def _our_format_by_signature(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:2] == b"BM" and data[6:10] == bytes(4):  # BMP: "BM", file size, two reserved zero words
        return "BMP"
    return next((name for magic, name in _OUR_MAGIC.items() if data.startswith(magic)), None)


def _known_other_format(data: bytes) -> str | None:
    if data[4:8] == b"ftyp":
        return f"ISO media ({data[8:12].decode('latin-1').strip()}, e.g. HEIC/AVIF)"
    return next((name for magic, name in _OTHER_MAGIC.items() if data.startswith(magic)), None)


def _load(img: Image.Image) -> Image.Image:
    """Decode fully and apply the EXIF orientation (labels refer to the displayed image)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
            ImageOps.exif_transpose(img, in_place=True)  # no copy when there is no orientation to apply
            return img
    except Image.DecompressionBombError as e:
        raise BadImage("too_large", str(e)[:200]) from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise BadImage("corrupt", str(e)[:200]) from None


def inspect_image(data: bytes, max_pixels: int = 64_000_000) -> tuple[int, int, str]:
    """Fully decode `data`; return (displayed width, displayed height, extension)."""
    img = _open(data, max_pixels)
    ext = FORMATS[img.format]
    shown = _load(img)
    return shown.width, shown.height, ext


def decode_rgb(data: bytes, max_pixels: int = 64_000_000) -> np.ndarray:
    """Decode to an HxWx3 uint8 RGB array in displayed orientation (any mode: L, I;16, CMYK, RGBA)."""
    return _rgb(_load(_open(data, max_pixels)))


def decode_letterboxed(
    data: bytes, size: int, stride: int = 0, max_pixels: int = 64_000_000
) -> tuple[np.ndarray, Letterbox, int, int]:
    """(canvas, placement, displayed width, displayed height): `letterbox(decode_rgb(data))`,
    except that a JPEG at least twice the letterboxed size is decoded at a reduced DCT scale
    (1/2, 1/4 or 1/8, the largest that keeps it at least that size: Pillow's `draft`), then
    resized the rest of the way. The placement is the full-size image's, so boxes map back
    to its pixels as they would from a full decode."""
    import cv2

    img = _open(data, max_pixels)
    jpeg, turned = img.format == "JPEG", _orientation(img) in (5, 6, 7, 8)  # displayed turned by 90 degrees
    width, height = (img.height, img.width) if turned else img.size
    if jpeg:
        nw, nh, _ = letterbox_params(width, height, size, stride)
        img.draft(img.mode, (nh, nw) if turned else (nw, nh))  # a no-op below 2x
    rgb = _rgb(_load(img))
    if not jpeg:  # decoded at full size: its own
        height, width = rgb.shape[:2]
    nw, nh, lb = letterbox_params(width, height, size, stride)
    resized = rgb if rgb.shape[:2] == (nh, nw) else cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return place(resized, size, lb, stride), lb, width, height


def jpeg_header(data: bytes, max_pixels: int = 64_000_000) -> tuple[int, int, int] | None:
    """(displayed width, displayed height, EXIF orientation) of a JPEG that a device may decode
    (`label.decode: gpu`), from its header alone; None for any other image, and for a JPEG
    whose verdict only a full decode gives here (no end-of-image marker: a truncated file;
    unreadable EXIF): those take the CPU path. Raises `BadImage` as `decode_rgb` would for
    what the header already shows (empty, not an image, too large)."""
    img = _open(data, max_pixels)
    if img.format != "JPEG" or not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return None
    try:
        orientation = int(img.getexif().get(0x0112, 1))
    except (OSError, ValueError, SyntaxError, EOFError, TypeError):
        return None
    if orientation not in range(1, 9):
        return None  # Pillow ignores it; so does the CPU path
    turned = orientation in (5, 6, 7, 8)
    width, height = (img.height, img.width) if turned else img.size
    return width, height, orientation


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation `_load` will apply (1: none); 1 when the EXIF cannot be read, and
    then `_load` rejects the image."""
    try:
        return int(img.getexif().get(0x0112, 1))
    except (OSError, ValueError, SyntaxError, EOFError, TypeError):
        return 1


def _rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        scale = 257.0 if arr.max(initial=0) > 255 else 1.0
        img = Image.fromarray(np.clip(arr / scale, 0, 255).astype(np.uint8), "L")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img)


def sniff_ext(data: bytes) -> str:
    """Extension for cached copies, from the bytes (never from a key or file name)."""
    return FORMATS[_open(data, max_pixels=1 << 62).format]


def for_training(data: bytes) -> tuple[bytes, str]:
    """(bytes, extension) of an image as training trees hold it: as it is, except a GIF
    (Ultralytics reads .gif as a video), which becomes a PNG of its first frame."""
    ext = sniff_ext(data)
    if ext != "gif":
        return data, ext
    buf = io.BytesIO()
    Image.fromarray(decode_rgb(data, max_pixels=1 << 62)).save(buf, format="PNG")
    return buf.getvalue(), "png"


def media_kind(header: bytes) -> str | None:
    """'image' or 'video' when the first bytes of a file are a format the pool reads, else
    None (for files whose name says nothing)."""
    if _our_format_by_signature(header):
        return "image"
    if header[4:8] == b"ftyp" and header[8:12] not in (b"heic", b"heix", b"avif", b"mif1"):  # mp4 / mov
        return "video"
    if header[:4] == b"RIFF" and header[8:12] == b"AVI " or header[:4] == b"\x1a\x45\xdf\xa3":  # avi / mkv
        return "video"
    return None


def letterbox(image: np.ndarray, size: int, stride: int = 0) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect ratio onto a canvas (size x size, or with `stride` the smallest
    stride-aligned rectangle: `core.geometry.canvas_size`), centred, as Ultralytics does."""
    import cv2

    h, w = image.shape[:2]
    nw, nh, lb = letterbox_params(w, h, size, stride)
    resized = image if (nw, nh) == (w, h) else cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return place(resized, size, lb, stride), lb


def place(resized: np.ndarray, size: int, lb: Letterbox, stride: int = 0) -> np.ndarray:
    """An image already resized to its letterbox size, on its canvas at `lb`'s padding."""
    nh, nw = resized.shape[:2]
    cw, ch = canvas_size(nw, nh, size, stride)
    canvas = np.full((ch, cw, 3), PAD_VALUE, dtype=np.uint8)
    top, left = int(lb.pad_y), int(lb.pad_x)
    canvas[top : top + nh, left : left + nw] = resized
    return canvas
