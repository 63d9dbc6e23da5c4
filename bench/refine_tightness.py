"""Does a learned box refiner (`ssl_ray.refine`) box pool objects more tightly than the teacher?

Trains the refiner on the labeled images of a `bench/ssl_gain.py` seed (its true boxes,
jittered), runs the teacher on the pool as the label stage does (`--combo`, see
`bench/view_tightness.py`), and scores the boxes at or above --conf against the pool's truth
(class-agnostic: the refiner moves boxes, it does not change classes) before and after
refinement: recall, precision, median IoU of the covered objects and the shares at IoU >=
0.9 and 0.95, for one or two passes, the refined box alone (blend 1.0) or averaged with the
teacher's (0.5), and with each `--tta` (the refiner's answers averaged over mirrored crops).

    .venv/bin/python bench/refine_tightness.py /tmp/gain/0-baseline-e600/rounds/r000/weights/best.pt \\
        /tmp/gain/data0/data.yaml --json docs/results/refine-tightness-seed0.json

With --spread, the refiner's spread over the crop's eight symmetries is scored as a sign of a
loose box (`train.max_box_spread`), beside the other signals a box has: its score, how far the
refiner moved it, and (with a flip in --combo) its IoU with the flipped view's box.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from view_tightness import combine, predict, tightness  # noqa: E402

os.environ.setdefault("YOLO_OFFLINE", "1")


def load_split(root: Path, split: str) -> tuple[list[Path], np.ndarray, list[np.ndarray]]:
    """Images (N, S, S, 3) and true xyxy pixel boxes of one split of a generated dataset."""
    import cv2

    files = sorted((root / "images" / split).iterdir())
    images = np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files])
    size = images.shape[1]
    boxes = []
    for f in files:
        v = np.array((root / "labels" / split / f"{f.stem}.txt").read_text().split(), float).reshape(-1, 5)
        c, wh = v[:, 1:3], v[:, 3:5]
        boxes.append(np.concatenate([c - wh / 2, c + wh / 2], 1) * size)
    return files, images, boxes


def best_iou(dets: np.ndarray, objects: list[np.ndarray]) -> np.ndarray:
    """Each detection's best IoU with any true box of its image (0 when there is none)."""
    from ssl_ray.consistency import iou

    if not len(objects):
        return np.zeros(len(dets))
    return np.array([iou(d[:4], np.array(objects)).max() for d in dets]).reshape(len(dets))


def moved(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """How far the refiner moved each box: its edges' mean displacement over the box's
    geometric-mean side."""
    side = np.sqrt(np.clip(before[:, 2] - before[:, 0], 1e-9, None) * np.clip(before[:, 3] - before[:, 1], 1e-9, None))
    return np.abs(after[:, :4] - before[:, :4]).mean(axis=1) / side


def signal_table(ious: np.ndarray, signal: np.ndarray, cuts: list[float]) -> dict:
    """Is a signal (the refiner's spread, 1 - score, ...: larger = less sure) a sign of a loose
    box? Boxes by its quartile (the signal's range there, the median IoU with the truth, the
    share at IoU >= 0.9), its rank correlation with the IoU (negative: the larger, the looser),
    and per cut the boxes at or under it against those over it (count, median IoU, share at
    IoU >= 0.9)."""
    def ranks(v):
        return np.argsort(np.argsort(v, kind="stable"), kind="stable").astype(float)

    def scored(part):
        return {"boxes": int(len(part)), "median_iou": round(float(np.median(part)), 3) if len(part) else None,
                "iou_at_least_0.9": round(float((part >= 0.9).mean()), 3) if len(part) else None}

    table: dict = {"boxes": int(len(ious))}
    if len(ious) < 4:
        return table
    quartile = np.searchsorted(np.quantile(signal, [0.25, 0.5, 0.75]), signal, side="right")
    table["rank_correlation"] = round(float(np.corrcoef(ranks(signal), ranks(ious))[0, 1]), 3)
    table["quartiles"] = [{"range": [round(float(signal[quartile == q].min()), 4),
                                     round(float(signal[quartile == q].max()), 4)], **scored(ious[quartile == q])}
                          for q in range(4) if (quartile == q).any()]
    table["cuts"] = {str(c): {"kept": scored(ious[signal <= c]), "over": scored(ious[signal > c])} for c in cuts}
    return table


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("weights", help="the teacher, e.g. a run's rounds/r000/weights/best.pt")
    ap.add_argument("data", type=Path, help="that seed's data.yaml (train = the labeled set, pool labels = truth)")
    ap.add_argument("--conf", type=float, default=0.5)
    ap.add_argument("--combo", default="flip;", help="CONSISTENCY;REFINE views, as in view_tightness")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="RefineSpec fields for training, e.g. steps=2000 (passes and blend: all four combinations "
                         "of 1 or 2 passes and blend 1.0 or 0.5 are scored)")
    ap.add_argument("--refiner", help="a trained refiner (a run's refiner/refiner.pt) instead of training one "
                                      "(--set is then ignored)")
    ap.add_argument("--tta", nargs="+", default=["none"], choices=["none", "h", "hv"],
                    help="refiner symmetries averaged at application (refine.tta): each is scored")
    ap.add_argument("--spread", nargs="*", type=float, metavar="CUT",
                    help="also score the refiner's spread (`BoxRefiner.refine`) as a box-reliability signal, with the "
                         "spec's own passes, blend and tta: each refined box's IoU with the truth by spread quartile, "
                         "and what a cut at each CUT keeps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()

    import dataclasses

    import torch

    from ssl_ray.config import StorageConfig
    from ssl_ray.consistency import parse_views
    from ssl_ray.refine import BoxRefiner, RefineSpec
    from ssl_ray.refine_stage import load_refiner
    from ssl_ray.teacher import Teacher

    torch.set_num_threads(args.threads)
    parse = {f.name: {"int": int, "float": float, "str": str}[f.type] for f in dataclasses.fields(RefineSpec)}
    overrides = {k: parse[k](v) for k, v in (kv.split("=", 1) for kv in args.set)}
    root = args.data.parent
    t0 = time.perf_counter()
    if args.refiner:
        refiner = load_refiner(args.refiner, StorageConfig())
    else:
        _, train_images, train_boxes = load_split(root, "train")
        refiner = BoxRefiner.fit(list(train_images), train_boxes, RefineSpec(**overrides), log=print)
    spec, fit_s = refiner.spec, None if args.refiner else time.perf_counter() - t0

    _, images, pool_boxes = load_split(root, "pool")
    truth = [[(0, b) for b in boxes] for boxes in pool_boxes]  # class-agnostic: tightness, not classes
    teacher = Teacher(args.weights, str(Path(args.weights).parent / "refine-tightness"), threads=1)
    names = sorted({v for part in args.combo.split(";") for v in part.split(",") if v})
    t0 = time.perf_counter()
    seen = {None: predict(teacher, images, None, 0.05, 64)}
    forward_s = time.perf_counter() - t0  # the teacher's plain forward over the pool, for scale
    for view in parse_views(names, images.shape[1]):
        seen[view.name] = predict(teacher, images, view, 0.05, 64)
    dets = [d[d[:, 4] >= args.conf] for d in combine(seen, args.combo, 0.5, 1.0)]
    agnostic = [np.concatenate([d[:, :5], np.zeros((len(d), 1))], 1) for d in dets]
    results = {"weights": args.weights, "combo": args.combo, "conf": args.conf, "spec": dataclasses.asdict(spec),
               "refiner": args.refiner, "fit_s": fit_s and round(fit_s, 1), "teacher_forward_s": round(forward_s, 2),
               "boxes": sum(map(len, dets)), "teacher": tightness(agnostic, truth, args.conf)}
    refiner(images, agnostic)  # warm-up: the first call's allocations are not the refiner's steady cost
    for tta, passes, blend in [(t, p, b) for t in args.tta for p, b in [(1, 1.0), (1, 0.5), (2, 1.0), (2, 0.5)]]:
        variant = BoxRefiner(dataclasses.replace(spec, passes=passes, blend=blend, tta=tta), refiner.net.state_dict())
        t0 = time.perf_counter()
        refined = variant(images, agnostic)
        results[f"refined: passes {passes}, blend {blend}" + (f", tta {tta}" if tta != "none" else "")] = {
            **tightness(refined, truth, args.conf), "seconds": round(time.perf_counter() - t0, 2)}
    if args.spread is not None:
        t0 = time.perf_counter()
        refiner(images, agnostic)  # what measuring the spread costs: the same refinement without it, side by side
        t1 = time.perf_counter()
        refined, spreads = refiner.refine(images, agnostic, spread=True)
        t2 = time.perf_counter()
        ious = np.concatenate([best_iou(d, [b for _, b in objects]) for d, objects in zip(refined, truth)])
        results["spread"] = {**signal_table(ious, np.concatenate(spreads), args.spread),
                             "seconds_without": round(t1 - t0, 2), "seconds_with": round(t2 - t1, 2)}
        # the same question of the other signals a box has, on the boxes that cover an object
        found = ious > 0
        signals = {"1 - score": 1 - np.concatenate([d[:, 4] for d in dets]),
                   "refiner's move": np.concatenate([moved(a, r) for a, r in zip(agnostic, refined)])}
        if "flip" in seen:
            signals["1 - IoU with the flip's box"] = 1 - np.concatenate(
                [best_iou(d, list(f[:, :4])) for d, f in zip(dets, seen["flip"])])
        results["other_signals"] = {name: signal_table(ious[found], v[found], []) for name, v in signals.items()}
        results["other_signals"]["spread"] = signal_table(ious[found], np.concatenate(spreads)[found], [])
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
