"""What each stage asks of the cluster, and whether a set of nodes can ever hold it (pure).

A stage's request is a list of bundles (one per inference actor or Ray Train worker). The
check packs them first-fit onto the nodes' *total* resources: busy nodes free up, but a
bundle bigger than any node never fits, and then the driver must wait for the autoscaler (or,
on a local cluster that cannot grow, say so at once).
"""

from __future__ import annotations

from ssl_ray.config import Config

Bundle = dict[str, float]

# How many sets of the actors' in-flight batches Ray Data may hold in its object store while
# labeling, by default. Ray Data splits that budget among the stage's operators (decode,
# inference, write) and between their running tasks and output queues, so decoding's queue
# ahead of the actors gets a fraction of it. On 2 CPU cores (docs/benchmarks.md), 5-11 sets
# (0.05 GiB) starved the actor; Ray Data's default (the whole pool, there) let memory grow
# with the pool; 22-44 sets (0.2 GiB) and this one held it flat at the same steady state.
LOOKAHEAD_SETS = 16


def stage_bundles(cfg: Config, stage: str) -> list[Bundle]:
    if stage == "label":
        one = {"CPU": cfg.label.num_cpus_per_actor, "GPU": cfg.label.num_gpus_per_actor}
        return [_nonzero(one)] * cfg.label.min_actors
    if stage == "train":
        one = {"CPU": cfg.train.cpus_per_worker, "GPU": 1.0 if cfg.train.use_gpu else 0.0}
        return [_nonzero(one)] * cfg.train.num_workers
    raise ValueError(f"unknown stage {stage!r}")


def label_data_budget(cfg: Config) -> int:
    """Object store bytes Ray Data may use while labeling: `ray.data_object_store_gb`, or by
    default LOOKAHEAD_SETS times the letterboxed images all actors hold in flight. Decoding
    outruns inference on CPUs; Ray Data's own default (half the object store) lets it queue
    the whole decoded pool, so memory would grow with the pool. Ray Data still caps the
    budget at its default share of the cluster's object store."""
    if cfg.ray.data_object_store_gb:
        return int(cfg.ray.data_object_store_gb * 2**30)
    in_flight = cfg.label.max_actors * cfg.label.actor_calls * cfg.label.batch_size
    return LOOKAHEAD_SETS * in_flight * cfg.model.imgsz**2 * 3  # uint8 HWC, letterboxed to imgsz


def unplaceable(bundles: list[Bundle], nodes: list[Bundle]) -> str | None:
    """None when every bundle fits on `nodes` (first-fit, largest first), else what does not."""
    free = [dict(n) for n in nodes]
    order = sorted(range(len(bundles)), key=lambda i: (-bundles[i].get("GPU", 0), -bundles[i].get("CPU", 0)))
    for placed, i in enumerate(order):
        bundle = bundles[i]
        node = next((n for n in free if all(n.get(k, 0) >= v - 1e-9 for k, v in bundle.items())), None)
        if node is None:
            have = _describe(_totals(nodes)) or "nothing"
            return (
                f"{len(bundles)} x {_describe(bundle)} requested, only {placed} fit on the cluster's "
                f"{len(nodes)} node(s) ({have} in all)"
            )
        for k, v in bundle.items():
            node[k] -= v
    return None


def _nonzero(bundle: Bundle) -> Bundle:
    return {k: float(v) for k, v in bundle.items() if v}


def _totals(nodes: list[Bundle]) -> Bundle:
    total: Bundle = {}
    for n in nodes:
        for k in ("CPU", "GPU"):
            total[k] = total.get(k, 0) + n.get(k, 0)
    return total


def _describe(bundle: Bundle) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in bundle.items() if v)
