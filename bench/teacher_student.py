"""The online mode's two final models side by side: the teacher (what a round keeps) and the
student, each scored on the same held-out set.

An online round (`train.ssl: online`) trains a student and keeps its exponential moving
average, the teacher, as the round's model. Each of the round's checkpoints holds both
(`online.pt`, full precision). This reads the last checkpoint of each run directory's round,
loads the two into the round's own network and validates each on `--data`'s val split, with
the product's settings of the run (imgsz, batch):

    .venv/bin/python -m bench.teacher_student --data /tmp/gain/data0/data.yaml /tmp/gain/0-ssl
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench.common import emit


def last_checkpoint(run: Path, round_: int) -> Path:
    """The round's newest Ray Train checkpoint that holds `online.pt` (the epoch's last report)."""
    folder = run / "rounds" / f"r{round_:03d}" / "ray"
    found = sorted(folder.glob("*/checkpoint_*/online.pt"))
    if not found:
        raise SystemExit(f"{folder}: no checkpoint with online.pt (not an online round, or not trained yet)")
    return found[-1].parent


def score(model, data: str, imgsz: int, batch: int, work: str) -> dict:
    results = model.val(
        data=data, imgsz=imgsz, batch=batch, device="cpu", workers=0, plots=False, verbose=False, project=work
    )
    return {"mAP50": round(float(results.box.map50), 4), "mAP50-95": round(float(results.box.map), 4)}


def compare(run: Path, round_: int, data: str) -> dict:
    import torch
    import yaml

    from ssl_ray.adapters.teacher import load_yolo

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    imgsz, batch = cfg["model"]["imgsz"], cfg["train"]["batch"]
    checkpoint = last_checkpoint(run, round_)
    saved = torch.load(checkpoint / "online.pt", map_location="cpu", weights_only=False)
    row = {"run": str(run), "round": round_, "epoch": saved["epoch"] + 1, "teacher_updates": saved["updates"]}
    with tempfile.TemporaryDirectory() as work:
        spec = yaml.safe_load(Path(data).read_text())  # Ultralytics reads a relative `path` from its own folder
        spec["path"] = str((Path(data).parent / spec.get("path", ".")).resolve())
        data = str(Path(work) / "data.yaml")
        Path(data).write_text(yaml.safe_dump(spec))
        for role in ("teacher", "student"):
            model = load_yolo(str(checkpoint / "last.pt"), work)
            model.model.float().load_state_dict(saved[role])
            row[role] = score(model, data, imgsz, batch, work)
    row["teacher_minus_student_mAP50-95"] = round(row["teacher"]["mAP50-95"] - row["student"]["mAP50-95"], 4)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.teacher_student", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories (output.dir) of online runs")
    ap.add_argument("--data", required=True, action="append", help="data.yaml of the held-out set, once or per run")
    ap.add_argument("--round", type=int, default=1, dest="round_")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if len(args.data) not in (1, len(args.runs)):
        ap.error("--data: give it once, or once per run")
    data = args.data * len(args.runs) if len(args.data) == 1 else args.data
    rows = [compare(run, args.round_, d) for run, d in zip(args.runs, data)]
    for row in rows:
        print(json.dumps(row), flush=True)
    emit({"rows": rows}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
