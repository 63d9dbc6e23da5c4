"""A hostile-input corpus, generated: {file name: (bytes, expected reject reason or None)}.

None means "must be labeled": such entries are valid but odd images. Every valid entry has
different pixels, so none is a duplicate of another.
"""

from __future__ import annotations

import io
import zlib

from PIL import Image, ImageDraw


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _picture(seed: int, size=(64, 48), mode="RGB") -> Image.Image:
    img = Image.new("RGB", size, (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256))
    ImageDraw.Draw(img).rectangle([4 + seed % 9, 4, 30, 20], fill=(250, 10, 10))
    return img.convert(mode) if mode != "RGB" else img


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header (with a valid CRC) claims width x height pixels."""
    data = bytearray(_encode(Image.new("L", (1, 1)), "PNG"))
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def png_bad_crc() -> bytes:
    data = bytearray(_encode(_picture(1), "PNG"))
    data[29] ^= 0xFF  # IHDR's CRC
    return bytes(data)


def exif_rotated_jpeg(seed: int) -> bytes:
    """Stored 64x48 with orientation 6: displayed 48x64 (portrait)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(_picture(seed), "JPEG", exif=exif)


def animated_gif(first: int = 0) -> bytes:
    frames = [_picture(first + i) for i in range(3)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def corpus() -> dict[str, tuple[bytes, str | None]]:
    valid_jpeg = _encode(_picture(2), "JPEG")
    names = [
        "with space.jpg",
        "ünïcødé 画像.jpg",
        "$(touch pwned).jpg",
        "; rm -rf x; `touch pwned2`.jpg",
        "quote'\"name.jpg",
        "new\nline.jpg",
        "-rf.jpg",
        "%s%n.jpg",
    ]
    items: dict[str, tuple[bytes, str | None]] = {
        "zero.jpg": (b"", "empty"),
        "truncated.jpg": (valid_jpeg[: len(valid_jpeg) // 3], "corrupt"),
        "bad-crc.png": (png_bad_crc(), "corrupt"),
        "text-named.jpg": (b"just some text, posing as a JPEG\n", "not_image"),
        "gray.jpg": (_encode(_picture(3, mode="L"), "JPEG"), None),
        "rgba.png": (_encode(_picture(4, mode="RGBA"), "PNG"), None),
        "cmyk.jpg": (_encode(_picture(5, mode="CMYK"), "JPEG"), None),
        "sixteen-bit.png": (_encode(Image.new("I;16", (64, 48), 40000 + 7), "PNG"), None),
        "exif-rotated.jpg": (exif_rotated_jpeg(6), None),
        "animated.gif": (animated_gif(), None),  # an image: its first frame
        "animated-gif-named.jpg": (animated_gif(first=7), None),  # the bytes decide, not the name
        "bomb.png": (png_claiming(100_000, 100_000), "too_large"),
        "corrupt.mp4": (b"\x00\x00\x00\x18ftypmp42" + bytes(200), "video_unreadable"),
        "zero-length.mp4": (b"", "video_unreadable"),
    }
    for i, name in enumerate(names):
        items[name] = (_encode(_picture(10 + i), "JPEG"), None)
    return items


# Displayed (width, height) of the valid entries that are not 64x48.
DISPLAYED = {"exif-rotated.jpg": (48, 64)}
