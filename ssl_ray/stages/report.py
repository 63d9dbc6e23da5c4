"""The run report: report.json, report.md (the per-round table) and PNG plots under
<out>/report/. Plots use matplotlib's Agg backend, in memory, then go to any store.

With `rounds.control`, every round >= 1 is set beside its labeled-only control segment: the
same start, (at least) the same training steps, the labels alone. The difference is what
the pseudo-labels bought, not what more training did."""

from __future__ import annotations

import io
import json

from ssl_ray.io.storage import Store

COLUMNS = [
    "round",
    "threshold",
    "pool items",
    "pseudo",
    "negative (used)",
    "uncertain",
    "rejected",
    "pseudo boxes per class",
    "train images",
    "mAP50",
    "mAP50-95",
    "label s",
    "train s",
    "round s",
]


CONTROL_COLUMNS = ["control mAP50-95", "over control"]


def gains(rounds: list[dict], control: list[dict]) -> dict[int, dict]:
    """Per round with a control segment: the control's held-out mAP50 and mAP50-95 and the
    round's gain over it (pure)."""
    by_round = {r["round"]: r for r in rounds}
    out = {}
    for seg in control:
        r = by_round[seg["round"]]["held_out"]
        c = seg["held_out"]
        out[seg["round"]] = {
            "control_mAP50": c["mAP50"],
            "control_mAP50-95": c["mAP50-95"],
            "gain_mAP50": r["mAP50"] - c["mAP50"],
            "gain_mAP50-95": r["mAP50-95"] - c["mAP50-95"],
            "iterations": seg["iterations"],
            "round_iterations": seg["round_iterations"],
        }
    return out


def threshold_cell(threshold: float | None, per_class: dict[str, float] | None) -> str:
    """The score cut a round selected with: its per-class range where classes differ
    (`select.adaptive`, `select.per_class`), else the round's one threshold."""
    if threshold is None:
        return "-"
    cuts = sorted(set((per_class or {}).values())) or [threshold]
    return f"{cuts[0]:.2f}" if len(cuts) == 1 else f"{cuts[0]:.2f}-{cuts[-1]:.2f}"


def table_rows(rounds: list[dict], control: list[dict] = ()) -> list[list]:
    vs = gains(rounds, list(control))
    rows = []
    for r in rounds:
        lab = r.get("label") or {}
        times = r.get("stage_seconds", {})
        per_class = ", ".join(f"{k} {v}" for k, v in lab.get("pseudo_boxes_per_class", {}).items()) or "-"
        rows.append(
            [
                r["round"],
                threshold_cell(r["threshold"], lab.get("class_thresholds")),
                lab.get("items", "-"),
                lab.get("pseudo", "-"),
                f"{lab['negative']} ({lab['negative_used']})" if lab else "-",
                lab.get("uncertain", "-"),
                lab.get("rejected", "-"),
                per_class,
                trained_on(r),
                f"{r['held_out']['mAP50']:.3f}",
                f"{r['held_out']['mAP50-95']:.3f}",
                times.get("label", "-"),
                times.get("train", "-"),
                r["seconds"],
                *(
                    [f"{vs[r['round']]['control_mAP50-95']:.3f}", f"{vs[r['round']]['gain_mAP50-95']:+.3f}"]
                    if r["round"] in vs
                    else (["-", "-"] if control else [])
                ),
            ]
        )
    return rows


def trained_on(record: dict) -> int | str:
    """The round's training images: its merged dataset, or in online mode (`train.ssl`) the
    labeled images and the unlabeled ones its teacher labeled while it trained."""
    if "unlabeled_images" in record:
        return f"{record['labeled_images']} + {record['unlabeled_images']} unlabeled"
    return record.get("train_images", record["labeled_images"])


def columns(control: list[dict] = ()) -> list[str]:
    return COLUMNS + (CONTROL_COLUMNS if control else [])


def verdict(rounds: list[dict], control: list[dict]) -> list[str]:
    """One line per round with a control: what it gained over the labels alone."""
    lines = []
    for r, g in sorted(gains(rounds, control).items()):
        lines.append(
            f"- round {r}: {g['gain_mAP50-95']:+.3f} mAP50-95 ({g['gain_mAP50']:+.3f} mAP50) over training "
            f"as long on your labels alone ({g['iterations']:,} steps against the round's "
            f"{g['round_iterations']:,})"
        )
    return lines


def markdown(rounds: list[dict], best: int, control: list[dict] = ()) -> str:
    control = list(control)
    head = columns(control)
    lines = [
        "# ssl_ray run report",
        "",
        f"Best round: **{best}** (its weights are final/weights/best.pt).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in table_rows(rounds, control)]
    if control:
        lines += [
            "",
            "Against a labeled-only control (`rounds.control`: the same start, the labels alone, "
            "at least as many training steps, segment by segment):",
            "",
            *verdict(rounds, control),
        ]
    lines += [
        "",
        "![held-out mAP per round](map_per_round.png)",
        "",
        "![pseudo-labels per class](pseudo_per_class.png)",
        "",
        "![teacher score histogram](score_histogram.png)",
        "",
    ]
    return "\n".join(lines)


def write_report(out: Store, rounds: list[dict], best: int, control: list[dict] = ()) -> None:
    control = list(control)
    report = out.child("report")
    body = {
        "best_round": best,
        "rounds": rounds,
        "control": control,
        "over_control": {str(r): g for r, g in gains(rounds, control).items()},
    }
    report.write_text("report.json", json.dumps(body, indent=2, sort_keys=True) + "\n")
    report.write_bytes("map_per_round.png", _plot_map(rounds, control))
    report.write_bytes("pseudo_per_class.png", _plot_per_class(rounds))
    report.write_bytes("score_histogram.png", _plot_scores(rounds))
    report.write_text("report.md", markdown(rounds, best, control))


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(6, 3.5))


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _plot_map(rounds: list[dict], control: list[dict] = ()) -> bytes:
    plt, fig, ax = _figure()
    xs = [r["round"] for r in rounds]
    for key in ("mAP50", "mAP50-95"):
        line = ax.plot(xs, [r["held_out"][key] for r in rounds], marker="o", label=key)[0]
        if control:  # the control's segments start from round 0, as the rounds do
            ax.plot(
                [0] + [c["round"] for c in control],
                [rounds[0]["held_out"][key]] + [c["held_out"][key] for c in control],
                marker="x",
                linestyle=":",
                color=line.get_color(),
                label=f"{key}, labels alone",
            )
    ax.axhline(rounds[0]["held_out"]["mAP50-95"], color="grey", linestyle="--", label="round 0 mAP50-95")
    ax.set(xlabel="round", ylabel="held-out mAP", xticks=xs, title="Held-out mAP per round")
    ax.legend()
    return _png(plt, fig)


def _plot_per_class(rounds: list[dict]) -> bytes:
    plt, fig, ax = _figure()
    labeled = [r for r in rounds if r.get("label")]
    classes = sorted({c for r in labeled for c in r["label"]["pseudo_boxes_per_class"]})
    width = 0.8 / max(len(classes), 1)
    for i, name in enumerate(classes):  # one group of bars centred on each round
        offset = (i - (len(classes) - 1) / 2) * width
        ax.bar(
            [r["round"] + offset for r in labeled],
            [r["label"]["pseudo_boxes_per_class"][name] for r in labeled],
            width,
            label=name,
        )
    ax.set(
        xlabel="round",
        ylabel="pseudo-label boxes",
        title="Pseudo-labels per class",
        xticks=[r["round"] for r in labeled],
    )
    if classes:
        ax.legend()
    return _png(plt, fig)


def _plot_scores(rounds: list[dict]) -> bytes:
    """Per round: how the teacher's kept detection scores spread, and where the threshold cut."""
    plt, fig, ax = _figure()
    for r in (r for r in rounds if r.get("label", {}).get("score_histogram")):
        counts = r["label"]["score_histogram"]
        edges = [i / len(counts) for i in range(len(counts) + 1)]
        line = ax.stairs(counts, edges, label=f"round {r['round']}")
        ax.axvline(r["threshold"], color=line.get_edgecolor(), linestyle="--", linewidth=1)
    ax.set(
        xlabel="detection score (dashed: the round's threshold)",
        ylabel="detections",
        xlim=(0, 1),
        title="Teacher scores on the pool",
    )
    ax.set_yscale("symlog")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return _png(plt, fig)
