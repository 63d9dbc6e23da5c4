"""What `select.ambiguous_images: mask` costs where the YOLO tree is written.

A plain pseudo-labeled image is a hard link into the node's image cache; a masked one is
decoded, painted and encoded again (`export.masked_image`). This writes the same rows into
fresh trees with and without their ignore regions, alternating, and reports the median time
per image of each, the new bytes on disk (a hard link adds none), and for scale the time to
decode each image once, which the trainer's dataloader pays for every image in every epoch.
The images are generated (noise, JPEG quality 90) at a size of your choosing, each with
`--kept` kept boxes and `--regions` ignore regions.

    .venv/bin/python bench/mask_cost.py --n 200 --size 1280x720
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssl_ray import schema  # noqa: E402
from ssl_ray.export import ImageCache, write_yolo_tree  # noqa: E402


def make_rows(n: int, width: int, height: int, kept: int, regions: int, seed: int) -> tuple[list[dict], dict]:
    rng = np.random.default_rng(seed)
    rows, data = [], {}
    for i in range(n):
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8) // 4 + 96
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
        image_id = schema.image_id_of_bytes(buf.getvalue())
        data[image_id] = buf.getvalue()
        boxes = [schema.box(0, *rng.uniform(0.2, 0.8, 2), *rng.uniform(0.05, 0.2, 2), 0.9) for _ in range(kept)]
        ignore = [schema.box(1, *rng.uniform(0.2, 0.8, 2), *rng.uniform(0.05, 0.2, 2), 0.3) for _ in range(regions)]
        rows.append({**schema.make_row(image_id=image_id, uri=f"gen/{i}.jpg", width=width, height=height,
                                       source="pseudo", round=1, boxes=boxes), "ignore": ignore})
    return rows, data


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200, help="images")
    ap.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT")
    ap.add_argument("--kept", type=int, default=3, help="kept boxes per image")
    ap.add_argument("--regions", type=int, default=2, help="ignore regions per image")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    rows, data = make_rows(args.n, width, height, args.kept, args.regions, seed=0)
    plain = [{**r, "ignore": None} for r in rows]
    times: dict[str, list[float]] = {"plain": [], "masked": [], "decode_once": []}
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = ImageCache(Path(tmp) / "cache")
        for r in rows:  # the cache is warm in both, as after the label stage
            cache.ensure(r["image_id"], lambda r=r: data[r["image_id"]])
        for k in range(args.repeats):
            for name, split in (("plain", plain), ("masked", rows)):
                out = Path(tmp) / f"{name}-{k}"
                start = time.perf_counter()
                write_yolo_tree(out, {"train": split}, ["kept", "unsure"], cache, lambda r: data[r["image_id"]])
                times[name].append((time.perf_counter() - start) / args.n * 1e3)
                sizes[name] = sum(p.stat().st_size for p in (out / "images" / "train").iterdir()
                                  if p.stat().st_nlink == 1)
            start = time.perf_counter()
            for r in rows:
                Image.open(io.BytesIO(data[r["image_id"]])).convert("RGB").load()
            times["decode_once"].append((time.perf_counter() - start) / args.n * 1e3)
    result = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "ms_per_image": {k: round(statistics.median(v), 2) for k, v in times.items()},
        "all_ms_per_image": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "new_bytes_on_disk": sizes,
    }
    result["masked_over_decode_once"] = round(result["ms_per_image"]["masked"] / result["ms_per_image"]["decode_once"], 1)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
