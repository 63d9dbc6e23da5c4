"""Round planning (pure): thresholds per round, early stopping, the best round, and the
rule that merges labeled and pseudo-labeled rows. The driver (`ssl_ray.driver`) does the I/O."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc

from ssl_ray.config import RoundsConfig, SelectConfig


def threshold_for(round: int, rounds: RoundsConfig, select: SelectConfig) -> float:
    """Confidence threshold of round r >= 1: `rounds.conf_schedule[r-1]`, its last entry once
    the schedule runs out, or `select.conf` without a schedule."""
    if round < 1:
        raise ValueError("round 0 trains on labeled data only: it has no threshold")
    schedule = rounds.conf_schedule
    return schedule[min(round, len(schedule)) - 1] if schedule else select.conf


def should_stop(scores: list[float], patience: int) -> bool:
    """True when the last `patience` rounds did not improve on the best score before them.
    `scores` are held-out mAP50-95 by round, round 0 first."""
    if len(scores) <= patience:
        return False
    best_before = max(scores[:-patience])
    return max(scores[-patience:]) <= best_before


def best_round(scores: list[float]) -> int:
    """Index of the best round; the earliest one on ties (fewer pseudo-labels, same score)."""
    return max(range(len(scores)), key=lambda r: (scores[r], -r))


def merged_rows(rows: pa.Table, labeled: pa.Array) -> pa.Table:
    """The merge's rule, a block of rows at a time: the labeled rows, and the round's selected
    rows whose image is not one of the `labeled` image ids (a labeled image keeps its human
    labels even if the pool holds the same bytes). The label stage selects each pool image at
    most once."""
    selected = pc.not_equal(rows["source"], "labeled")
    return rows.filter(pc.invert(pc.and_(selected, pc.is_in(rows["image_id"], value_set=labeled))))


def labeled_copies(fraction: float | None, n_labeled: int, n_other: int) -> int:
    """How many times each labeled image appears so that labeled images make up about
    `fraction` of an epoch next to `n_other` pseudo-labeled and negative images (at least 1)."""
    if fraction is None or n_labeled == 0 or n_other == 0:
        return 1
    return max(1, round(fraction / (1 - fraction) * n_other / n_labeled))


def online_copies(n_labeled: int, n_pool: int) -> int:
    """Online mode: how many times each labeled image appears per epoch so that an epoch has
    as many labeled batches as one pass over the `n_pool` unlabeled images takes (at least 1)."""
    return max(1, math.ceil(n_pool / max(n_labeled, 1)))


def iterations(images: int, batch: int, epochs: int) -> int:
    """Training iterations (batches) of `epochs` epochs over `images` images."""
    return math.ceil(images / batch) * epochs


def epoch_images(record: dict) -> int:
    """Images a round trained on per epoch: its labeled images repeated `labeled_copies` times
    plus its pseudo-labeled and negative images (round 0: the labeled images). An online
    round records its own (`epoch_images`: the labeled batches; each also carried as many
    unlabeled images)."""
    if "epoch_images" in record:
        return record["epoch_images"]
    n_labeled = record["labeled_images"]
    return n_labeled * record.get("labeled_copies", 1) + record.get("train_images", n_labeled) - n_labeled


def control_plan(record: dict, multiple: float, batch: int) -> dict:
    """The labeled-only control segment matching round `record` (`rounds.control`): the labeled
    images repeated so that an epoch has at least `multiple` times the round's epoch's images,
    for as many epochs as the round ran (no early stopping), so its iterations are at least
    `multiple` times the round's. Returns copies, epochs and both iteration counts."""
    n_labeled, images, epochs = record["labeled_images"], epoch_images(record), record["held_out"]["epoch"]
    copies = max(1, math.ceil(multiple * images / n_labeled))
    return {
        "labeled_copies": copies,
        "epochs": epochs,
        "iterations": iterations(n_labeled * copies, batch, epochs),
        "round_iterations": iterations(images, batch, epochs),
    }


def eta_seconds(rounds: list[dict], max_rounds: int, control: float = 0.0) -> float | None:
    """Seconds the run still needs at most (early stopping may end it sooner): each round left
    as long as the last finished round >= 1 (they train on about the same images for the same
    epochs), and the control's segments as long as `control` times the rounds' training.
    None before round 1 is done: until then the pool's size is not known."""
    later = [r for r in rounds if r["round"] >= 1]
    if not later:
        return None
    left = max(0, max_rounds + 1 - len(rounds))
    last = later[-1]
    train = sum(r["stage_seconds"].get("train", 0.0) for r in later) + left * last["stage_seconds"].get("train", 0.0)
    return left * last["seconds"] + control * train
