"""Do test-time views box objects more tightly? A teacher on a `bench/ssl_gain.py` pool.

The teacher runs on every pool image and on each view of it (`ssl_ray.consistency`: the
views the label stage runs, mapped back the same way). For each view alone, and for each
combination fused as the inference actor fuses it, the boxes at or above --conf are matched
to the pool's true boxes (same class, IoU >= 0.5, best match per true box) and reported:

- recall and precision of the boxes (a true box covered; a box covering one);
- how tightly the covered objects are boxed: the median IoU, and the shares at IoU >= 0.9
  and >= 0.95 (mAP50-95 averages over IoU thresholds 0.5 to 0.95).

A combination is `CONSISTENCY;REFINE`, each a comma-separated list of views: `flip;` is
label.consistency_views [flip] (a box kept only where the flip agrees), `flip;zoom:2` adds
label.refine_views [zoom:2] (fused into the boxes it matches, no vote).

    .venv/bin/python bench/view_tightness.py /tmp/gain/0-baseline-e600/rounds/r000/weights/best.pt \\
        /tmp/gain/data0/data.yaml --json docs/results/view-tightness-seed0.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ssl_gain import pool_truth  # noqa: E402  (the same truth the benchmark scores against)

os.environ.setdefault("YOLO_OFFLINE", "1")
VIEWS = ["flip", "scale:0.8", "zoom:1.5", "zoom:2", "zoom:3"]
COMBOS = ["flip;", "flip;zoom:1.5", "flip;zoom:2", "flip,zoom:2;", ";zoom:2"]


def predict(teacher, images: np.ndarray, view, floor: float, batch: int) -> list[np.ndarray]:
    """The teacher's detections on `view` of every image, mapped back to the canvas."""
    from ssl_ray.consistency import apply_view, undo_view

    out = []
    for i in range(0, len(images), batch):
        chunk = images[i:i + batch] if view is None else apply_view(images[i:i + batch], view)
        out += [d.astype(np.float64) if view is None else undo_view(d, view)
                for d in teacher.predict(chunk, floor)]
    return out


def tightness(dets: list[np.ndarray], truth: list[list[np.ndarray]], conf: float) -> dict:
    """Recall, precision and the IoU of the boxes covering a true object (same class, IoU >= 0.5)."""
    from ssl_ray.consistency import iou

    covered, boxes, true, hits = [], 0, 0, 0
    for d, objects in zip(dets, truth):
        d = d[d[:, 4] >= conf]
        boxes += len(d)
        true += len(objects)
        hit = np.zeros(len(d), bool)
        for cls, box in objects:
            same = np.flatnonzero(d[:, 5] == cls)
            if not len(same):
                continue
            overlap = iou(box, d[same, :4])
            if overlap.max() >= 0.5:
                covered.append(overlap.max())
                hit[same[overlap >= 0.5]] = True
        hits += int(hit.sum())
    c = np.array(covered)
    return {"boxes": boxes, "recall": round(len(c) / true, 3), "precision": round(hits / max(boxes, 1), 3),
            "median_iou": round(float(np.median(c)), 3) if len(c) else None,
            "iou_at_least_0.9": round(float((c >= 0.9).mean()), 3) if len(c) else None,
            "iou_at_least_0.95": round(float((c >= 0.95).mean()), 3) if len(c) else None}


def combine(seen: dict, combo: str, iou_thr: float, min_agreement: float) -> list[np.ndarray]:
    """The boxes the inference actor keeps for one combination `CONSISTENCY;REFINE`."""
    from ssl_ray.consistency import fuse

    consistency, refine = ([v for v in part.split(",") if v] for part in combo.split(";"))
    views = consistency + refine
    counted = [True] * len(consistency) + [False] * len(refine)
    out = []
    for i, base in enumerate(seen[None]):
        fused, agree = fuse(base, [seen[v][i] for v in views], iou_thr, counted)
        out.append(fused[agree >= min_agreement] if consistency else fused)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("weights", help="the teacher, e.g. a run's rounds/r000/weights/best.pt")
    ap.add_argument("data", type=Path, help="that seed's data.yaml (its pool labels are the truth)")
    ap.add_argument("--conf", type=float, default=0.5, help="boxes scored at or above this are counted")
    ap.add_argument("--views", nargs="+", default=VIEWS)
    ap.add_argument("--combos", nargs="+", default=COMBOS, help="CONSISTENCY;REFINE, e.g. 'flip;zoom:2'")
    ap.add_argument("--iou", type=float, default=0.5, help="label.consistency_iou")
    ap.add_argument("--min-agreement", type=float, default=1.0, help="select.min_agreement")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--json")
    args = ap.parse_args()

    import cv2
    import torch

    from ssl_ray.consistency import parse_views
    from ssl_ray.schema import image_id_of_bytes
    from ssl_ray.teacher import Teacher
    from ssl_ray.thresholds import xyxy

    torch.set_num_threads(1)
    truth_by_id = pool_truth(args.data)

    files = sorted((args.data.parent / "images" / "pool").iterdir())
    images = np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files])
    size = images.shape[1]
    if images.shape[2] != size:
        raise SystemExit("expected square pool images (a bench/ssl_gain.py pool is generated at the canvas size)")
    truth = [[(b["cls"], xyxy(b) * size) for b in truth_by_id[image_id_of_bytes(f.read_bytes())]] for f in files]
    teacher = Teacher(args.weights, str(Path(args.weights).parent / "view-tightness"), threads=1)
    names = sorted({v for combo in args.combos for part in combo.split(";") for v in part.split(",") if v}
                   | set(args.views))
    seen = {None: predict(teacher, images, None, 0.05, args.batch)}
    for view in parse_views(names, size):
        seen[view.name] = predict(teacher, images, view, 0.05, args.batch)
    results = {"weights": args.weights, "images": len(files), "conf": args.conf, "canvas": size,
               "views": {name or "base": tightness(seen[name], truth, args.conf) for name in [None, *args.views]},
               "combos": {combo: tightness(combine(seen, combo, args.iou, args.min_agreement), truth, args.conf)
                          for combo in args.combos}}
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
