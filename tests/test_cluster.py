"""Cluster definitions: every manifest loads, the launcher file passes Ray's own validation, and
every entrypoint and config a manifest names exists and loads with the project's loader."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from ssl_ray.config import load_config

ROOT = Path(__file__).parents[1]
CLUSTER = ROOT / "cluster"
MANIFESTS = sorted(CLUSTER.rglob("*.yaml"))
JOB_CONFIGS = sorted((ROOT / "jobs" / "configs").glob("*.yaml"))


def load_all(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@pytest.mark.parametrize("path", MANIFESTS + JOB_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_loads(path):
    assert load_all(path)


@pytest.mark.parametrize("path", JOB_CONFIGS, ids=lambda p: p.name)
def test_job_configs_load_with_the_project_loader(path):
    load_config(path)


def test_expected_job_configs_exist():
    assert {p.name for p in JOB_CONFIGS} >= {"smoke.yaml", "gpu-1node.yaml", "fleet-video-s3.yaml"}


def test_aws_launcher_file_passes_rays_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    validate_config(prepare_config(config))

    assert re.fullmatch(r"rayproject/ray:2\.60\.\d+-py3\d+-gpu", config["docker"]["image"])
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert not head["node_config"]["InstanceType"].startswith(("g", "p"))  # a CPU head runs the driver
    for name, t in types.items():  # the launcher's default instance profile covers the head only
        assert t["node_config"]["IamInstanceProfile"]["Arn"], name
    assert all(t["min_workers"] == 0 for t in workers.values())
    assert any(t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot" for t in workers.values())
    assert config["max_workers"] >= sum(t["max_workers"] for t in workers.values())
    assert all(
        "RAY_AUTH_MODE=token" in c
        for c in config["head_start_ray_commands"][1:] + config["worker_start_ray_commands"][1:]
    )


def test_dockerfile_builds_on_the_ray_2_60_gpu_image():
    text = (CLUSTER / "Dockerfile").read_text()
    assert re.search(r"^FROM rayproject/ray:2\.60\.\d+-py3\d+-gpu$", text, re.M)
    assert "pip install" in text


def entrypoint_targets(command: str) -> tuple[Path, Path]:
    """`python -m MODULE --config PATH ...` -> (module file, config file)."""
    args = shlex.split(command)
    assert args[:2] == ["python", "-m"], command
    module = ROOT / (args[2].replace(".", "/") + ".py")
    return module, ROOT / args[args.index("--config") + 1]


def test_kuberay_rayjob():
    docs = load_all(CLUSTER / "kuberay" / "rayjob.yaml")
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ServiceAccount", "RayJob"}
    account = kinds["ServiceAccount"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    job = kinds["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    module, config = entrypoint_targets(job["spec"]["entrypoint"])
    assert module.is_file() and config.is_file()
    load_config(config)

    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"].startswith("2.60") and cluster["enableInTreeAutoscaling"] is True
    pods = [cluster["headGroupSpec"]["template"], job["spec"]["submitterPodTemplate"]]
    pods += [g["template"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]  # S3 through the role
        for container in pod["spec"]["containers"]:
            env = {e["name"]: e for e in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "token"
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] == 0 < group["maxReplicas"]
        spec = group["template"]["spec"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        limits = spec["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1


def test_runtime_env_parses():
    from ray.runtime_env import RuntimeEnv

    env = RuntimeEnv(**yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text()))
    assert "runs/" in env["excludes"] and ".venv/" in env["excludes"]
    assert all(isinstance(v, str) for v in env["env_vars"].values())


def test_every_job_command_in_the_docs_names_files_that_exist():
    texts = [
        p.read_text()
        for p in [*MANIFESTS, CLUSTER / "Dockerfile", ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *JOB_CONFIGS]
    ]
    named = {m for text in texts for m in re.findall(r"(?:jobs|cluster)/[\w/.-]+\.(?:ya?ml|py)", text)}
    assert "jobs/configs/fleet-video-s3.yaml" in named
    assert [n for n in sorted(named) if not (ROOT / n).exists() and "my.yaml" not in n] == []
