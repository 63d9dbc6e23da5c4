"""Which requests a cluster can hold (table-driven), and the fail-fast / wait behaviour."""

import pytest

from ssl_ray.config import load_config
from ssl_ray.core.resources import LOOKAHEAD_SETS, label_data_budget, stage_bundles, unplaceable

CPU_NODE = {"CPU": 8.0, "memory": 3e10}
GPU_NODE = {"CPU": 16.0, "GPU": 1.0}
GPU4_NODE = {"CPU": 48.0, "GPU": 4.0}


@pytest.mark.parametrize(
    "bundles, nodes, fits",
    [
        ([], [], True),
        ([{"CPU": 1}], [CPU_NODE], True),
        ([{"CPU": 1, "GPU": 1}], [CPU_NODE], False),  # GPU nodes not up yet
        ([{"CPU": 1, "GPU": 1}], [CPU_NODE, GPU_NODE], True),
        ([{"CPU": 8, "GPU": 1}] * 2, [CPU_NODE, GPU_NODE], False),  # two workers, one GPU
        ([{"CPU": 8, "GPU": 1}] * 4, [GPU4_NODE], True),  # one 4-GPU node holds 4 ranks
        ([{"CPU": 20, "GPU": 1}] * 4, [GPU4_NODE], False),  # ...but not with 20 CPUs each
        ([{"CPU": 4, "GPU": 0.5}] * 2, [GPU_NODE], True),  # two actors share a GPU
        ([{"CPU": 9}], [CPU_NODE, CPU_NODE], False),  # no node is big enough
        ([{"CPU": 4}, {"CPU": 4, "GPU": 1}], [GPU_NODE], True),
    ],
)
def test_unplaceable(bundles, nodes, fits):
    assert (unplaceable(bundles, nodes) is None) == fits


def test_message_says_what_and_how_much():
    msg = unplaceable([{"CPU": 8, "GPU": 1}] * 2, [CPU_NODE, GPU_NODE])
    assert msg == "2 x 8 CPU, 1 GPU requested, only 1 fit on the cluster's 2 node(s) (24 CPU, 1 GPU in all)"


@pytest.mark.parametrize(
    "overrides, stage, expected",
    [
        (
            ["label.min_actors=2", "label.num_gpus_per_actor=0.5", "label.num_cpus_per_actor=4"],
            "label",
            [{"CPU": 4.0, "GPU": 0.5}] * 2,
        ),
        (["label.num_gpus_per_actor=0", "label.num_cpus_per_actor=1"], "label", [{"CPU": 1.0}]),
        (["train.num_workers=4", "train.cpus_per_worker=8"], "train", [{"CPU": 8.0, "GPU": 1.0}] * 4),
        (["train.use_gpu=false", "train.cpus_per_worker=1"], "train", [{"CPU": 1.0}]),
    ],
)
def test_stage_bundles(overrides, stage, expected):
    assert stage_bundles(load_config(None, overrides), stage) == expected


@pytest.mark.parametrize(
    "overrides, images_in_flight, imgsz",
    [
        (["label.max_actors=1", "label.actor_calls=2", "label.batch_size=32", "model.imgsz=160"], 64, 160),
        (["label.max_actors=8", "label.actor_calls=2", "label.batch_size=64", "model.imgsz=640"], 1024, 640),
        (["label.max_actors=4", "label.actor_calls=1", "label.batch_size=16", "model.imgsz=320"], 64, 320),
    ],
)
def test_label_data_budget_follows_the_actors_batches(overrides, images_in_flight, imgsz):
    budget = label_data_budget(load_config(None, overrides))
    assert budget == LOOKAHEAD_SETS * images_in_flight * imgsz * imgsz * 3


def test_label_data_budget_setting_wins():
    cfg = load_config(None, ["ray.data_object_store_gb=0.5", "label.max_actors=64", "model.imgsz=1280"])
    assert label_data_budget(cfg) == 2**29


@pytest.mark.ray
def test_local_cluster_fails_fast_naming_the_settings(ray_local):
    from ssl_ray.adapters.runtime import ensure_resources
    from ssl_ray.errors import ResourceError

    ensure_resources(load_config(None, ["train.use_gpu=false", "train.cpus_per_worker=1"]), "train")
    with pytest.raises(
        ResourceError,
        match=r"^train: 1 x 8 CPU, 1 GPU requested, only 0 fit .*this local cluster "
        r"cannot grow: lower train.use_gpu, train.cpus_per_worker",
    ):
        ensure_resources(load_config(None), "train")


@pytest.mark.ray
def test_joined_cluster_waits_for_the_autoscaler_then_names_what_is_missing(ray_local, monkeypatch):
    import ssl_ray.adapters.runtime as runtime
    from ssl_ray.errors import ResourceError

    monkeypatch.setattr(runtime, "_local_cluster", False)  # as if joined to an autoscaling cluster
    cfg = load_config(None, ["ray.resource_wait_s=1", "label.min_actors=1", "label.num_gpus_per_actor=1"])
    with pytest.raises(ResourceError, match=r"^label: .* after waiting 1 s for the autoscaler \(ray.resource_wait_s\)"):
        runtime.ensure_resources(cfg, "label", poll_s=0.2)
