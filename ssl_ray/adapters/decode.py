"""JPEG decoding on the inference actor's device (`label.decode: gpu`), the thin torch adapter.

The decode tasks send a JPEG's bytes and its placement, worked out from its header
(`io.items`); here the actor decodes a batch of them at once with torchvision's
`decode_jpeg(list, device=...)` (nvJPEG on a GPU, libjpeg on a CPU), applies the EXIF
orientation, resizes and places each on its canvas as tensors, so a canvas is made on the
device and stays there for the forward and the test-time views. One undecodable file fails
torchvision's whole batch: then each is decoded alone, and the ones that still fail come back
as None for the caller to decode on CPU (`io.images`), which quarantines them with the
reason the CPU path would give.
"""

from __future__ import annotations

import warnings

import numpy as np

from ssl_ray.core.consistency import View
from ssl_ray.core.geometry import PAD_VALUE, canvas_size, letterbox_params
from ssl_ray.io.images import BadImage, decode_letterboxed


def decode_batch(batch: dict, imgsz: int, stride: int, max_pixels: int, device) -> tuple[dict, list]:
    """(the batch, its canvases on `device`) for a decoded batch (`stages.label_workers.columns`): the
    JPEGs that travelled encoded decoded in one call (`device_canvases`), the other items'
    canvases uploaded. A JPEG the device cannot decode is decoded on CPU as the decode tasks
    would (reduced scale and all); one that fails there too becomes a reject with that path's
    reason, alone."""
    import torch

    reasons = list(batch["reject_reason"])
    encoded = [i for i, (r, data) in enumerate(zip(reasons, batch["encoded"])) if not r and len(data)]
    pick = lambda k: [batch[k][i] for i in encoded]  # noqa: E731
    made = device_canvases(pick("encoded"), pick("orientation"), pick("width"), pick("height"), imgsz, stride, device)
    on_device = dict(zip(encoded, made, strict=True))
    canvases, failed = [], {}
    for i, reason in enumerate(reasons):
        if reason:
            continue
        if i not in on_device:  # decoded by its task (not a JPEG, a video frame): upload a copy
            canvases.append(torch.from_numpy(np.array(batch["image"][i])).to(device))
        elif on_device[i] is not None:
            canvases.append(on_device[i])
        else:  # the device could not decode it: the CPU path's verdict
            try:
                canvas = decode_letterboxed(bytes(batch["encoded"][i]), imgsz, stride, max_pixels)[0]
            except BadImage as e:
                failed[i] = e
                continue
            canvases.append(torch.from_numpy(canvas).to(device))
    return (quarantine(batch, failed) if failed else batch), canvases


def quarantine(batch: dict, failed: dict[int, BadImage]) -> dict:
    """`batch` with the items at `failed`'s indices turned into rejects, as
    `io.items.reject_row` makes them: no id, no size, the reason and its detail."""
    out = dict(batch)
    for key in ("image_id", "reject_reason", "reject_detail"):
        out[key] = list(batch[key])
    for key in ("width", "height", "ratio", "pad_x", "pad_y"):
        out[key] = np.array(batch[key], copy=True)
    for i, e in failed.items():
        out["image_id"][i], out["reject_reason"][i], out["reject_detail"][i] = "", e.reason, e.detail[:500]
        out["width"][i] = out["height"][i] = 0
        out["ratio"][i], out["pad_x"][i], out["pad_y"][i] = 1.0, 0.0, 0.0
    return out


def device_canvases(encoded, orientations, widths, heights, imgsz: int, stride: int, device) -> list:
    """One (H, W, 3) uint8 canvas on `device` per JPEG in `encoded`, placed as
    `letterbox_params(width, height, imgsz, stride)` says (`width` and `height` as displayed,
    after the EXIF orientation); None for one the device could not decode, or whose decoded
    size is not its header's."""
    decoded = _decode(list(encoded), device)
    return [
        None if image is None else _canvas(image, int(o), int(w), int(h), imgsz, stride)
        for image, o, w, h in zip(decoded, orientations, widths, heights, strict=True)
    ]


def _decode(encoded: list[bytes], device) -> list:
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    if not encoded:
        return []
    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in encoded]
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders in favour of TorchCodec; they still work
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:  # one bad file fails the batch: decode them one at a time
            out = []
            for one in data:
                try:
                    out.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    out.append(None)
            return out


def orient(image, orientation: int):
    """A (3, H, W) image as displayed under EXIF `orientation` (1-8), as Pillow's
    `ImageOps.exif_transpose` turns it."""
    import torch

    hw = (-2, -1)
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return torch.rot90(image, 2, hw)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return torch.rot90(image, -1, hw)
    if orientation == 7:
        return torch.rot90(image.transpose(-2, -1), 2, hw)
    if orientation == 8:
        return torch.rot90(image, 1, hw)
    return image


def _canvas(image, orientation: int, width: int, height: int, imgsz: int, stride: int):
    import torch
    import torch.nn.functional as F

    image = orient(image, orientation)
    if tuple(image.shape[1:]) != (height, width):
        return None  # the header and the data disagree: the CPU path decides
    nw, nh, lb = letterbox_params(width, height, imgsz, stride)
    if (nh, nw) != (height, width):
        # a plain bilinear, as Ultralytics' letterbox (cv2 INTER_LINEAR from the full-size
        # decode): on 1080p photos the teacher then finds exactly Ultralytics' boxes (1.00 of
        # them; 0.91 antialiased; bench.label_throughput --mode photos --device-decode)
        resized = F.interpolate(image[None].float(), size=(nh, nw), mode="bilinear", align_corners=False)
        image = resized[0].round_().clamp_(0, 255).to(torch.uint8)
    cw, ch = canvas_size(nw, nh, imgsz, stride)
    canvas = torch.full((ch, cw, 3), PAD_VALUE, dtype=torch.uint8, device=image.device)
    top, left = int(lb.pad_y), int(lb.pad_x)
    canvas[top : top + nh, left : left + nw] = image.permute(1, 2, 0)
    return canvas


def apply_view(images, view: View):
    """`core.consistency.apply_view` for an (N, H, W, 3) uint8 tensor: the view of the
    canvases, of the same shape, on their device."""
    import torch
    import torch.nn.functional as F

    if view.a == -1.0:
        return images.flip(2)
    h, w = images.shape[1:3]
    inner_w, inner_h = max(1, round(w * view.a)), max(1, round(h * view.c))
    left, top = int(round(view.b)), int(round(view.d))
    shrunk = F.interpolate(images.permute(0, 3, 1, 2).float(), size=(inner_h, inner_w), mode="area")
    out = torch.full_like(images, PAD_VALUE)
    shrunk = shrunk.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    out[:, top : top + inner_h, left : left + inner_w] = shrunk
    return out
