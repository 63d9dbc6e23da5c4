"""What the command line prints: plain right-aligned tables of a stage's summary."""

from __future__ import annotations


def table(header: list[str], rows: list[list]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for line in [header, *rows]:
        print("  ".join(str(x).rjust(w) for x, w in zip(line, widths)))


def print_train_metrics(m: dict) -> None:
    keys = ["precision", "recall", "mAP50", "mAP50-95"]
    rows = [["all", *(f"{m[k]:.3f}" for k in keys)]]
    rows += [[name, *(f"{v[k]:.3f}" for k in keys)] for name, v in m.get("per_class", {}).items()]
    table(["class", *keys], rows)


def print_label_summary(s: dict) -> None:
    table(
        ["items", "pseudo", "negative (used)", "uncertain", "rejected", "items/s", "inference items/s"],
        [
            [
                s["items"],
                s["pseudo"],
                f"{s['negative']} ({s['negative_used']})",
                s["uncertain"],
                s["rejected"],
                s["items_per_s"],
                s.get("inference_items_per_s") or "-",
            ]
        ],
    )
    per_class = [f"{k} {v}" for k, v in s["pseudo_boxes_per_class"].items() if v]
    print("pseudo boxes per class: " + (", ".join(per_class) or "none"))
    if s["rejected_by_reason"]:
        print("rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(s["rejected_by_reason"].items())))
    if s.get("skipped_not_media"):
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(s["skipped_by_extension"].items()))
        print(f"skipped, not images or videos: {s['skipped_not_media']} ({kinds})")
