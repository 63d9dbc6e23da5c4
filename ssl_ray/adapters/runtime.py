"""The single place that prepares a process for Ultralytics and for Ray.

Nothing here runs at import. `prepare_ultralytics(work_dir)` must be called before the first
`import ultralytics` in a process (the adapters do it); `start_ray_for(cfg)` (or `start_ray`)
connects to a cluster or starts a local one bound to 127.0.0.1 with token auth left on.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

_LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # else Ray resolves to the eth0 address
# What a local cluster's workers inherit unless already set. Arrow's default allocator
# (mimalloc) keeps what a task freed in a worker that runs many Parquet tasks in turn: the
# merge's largest worker held 665 MiB at 10^6 rows (jemalloc: 363 MiB, as fast; research
# section 6). A cluster's jobs get the same from cluster/runtime_env.yaml and the image.
WORKER_ENV = {"ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}
_local_cluster = False  # this process started its own cluster: it cannot grow


def prepare_ultralytics(work_dir: str | os.PathLike, threads: int | None = None):
    """Import Ultralytics offline-safe, its settings inside `work_dir`; return the module.

    - YOLO_OFFLINE=1: no network probes; YOLO_CONFIG_DIR=<work_dir>/ultralytics: its settings
      file and font cache live with the run, not in the user's home.
    - a local font as Arial.ttf, so plotting never tries to download one.
    - the raytune callback off (it must not report inside Ray Train).
    - torch's thread count restored (Ultralytics sets it to cores-1 on import).
    """
    import torch

    config_dir = Path(work_dir).expanduser() / "ultralytics"
    config_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    _install_font(config_dir)
    want = threads or torch.get_num_threads()

    import ultralytics
    from ultralytics.utils import SETTINGS

    if SETTINGS.get("raytune", False) or SETTINGS.get("sync", False):
        SETTINGS.update({"raytune": False, "sync": False})
    torch.set_num_threads(want)
    return ultralytics


def _install_font(config_dir: Path) -> None:
    target = config_dir / "Arial.ttf"
    if target.exists():
        return
    try:
        import matplotlib

        font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        shutil.copyfile(font, target)
        shutil.copyfile(font, config_dir / "Arial.Unicode.ttf")
    except OSError as e:  # plotting degrades; never fatal
        log.warning("no local font for Ultralytics plots: %s", e)


def start_ray_for(cfg, log=None):
    """`start_ray` with the `ray` section of a config; with `log` (an `adapters.logs.LogFile`)
    Ray's and the workers' output go to that file, their progress lines to the console."""
    if log is not None:
        os.environ.update(_LOCAL_RAY_ENV)
        import ray  # noqa: F401 - importing Ray sets up its loggers; they are redirected next

        from ssl_ray.adapters.logs import capture_logging, route_worker_logs

        capture_logging(log)  # before Ray starts: what it logs at start goes to the file too
    ray = start_ray(
        cfg.ray.address,
        cfg.ray.num_cpus,
        object_store_gb=cfg.ray.object_store_memory_gb,
        workers_soft_limit=cfg.ray.num_workers_soft_limit,
        configure_logging=log is None,
    )
    if log is not None:
        route_worker_logs(log)
        ray.data.DataContext.get_current().enable_progress_bars = False  # the stage prints its own progress
    return ray


def start_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    *,
    object_store_gb: float | None = None,
    workers_soft_limit: int | None = None,
    log_to_driver: bool = True,
    configure_logging: bool = True,
):
    """Join `address` (or RAY_ADDRESS), else start a local cluster on 127.0.0.1.

    A local cluster keeps Ray's defaults, token auth included, with two exceptions for small
    machines: more logical CPUs than cores, so an inference actor pool never starves the read
    tasks; and at most `workers_soft_limit` worker processes (default: the cores) kept once
    idle. Ray keeps up to its logical CPUs, and every short task (Ray Data's metadata tasks,
    writes, finalize) can leave one more ~150 MiB process behind: the label stage's peak
    memory then grew with the pool (docs/benchmarks.md).
    """
    os.environ.update(_LOCAL_RAY_ENV)  # read by Ray at import: set it first
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=log_to_driver, configure_logging=configure_logging)
        log.info("joined Ray cluster at %s", address)
        return ray
    global _local_cluster
    _local_cluster = True
    for key, value in WORKER_ENV.items():  # the raylet and its workers start from this environment
        os.environ.setdefault(key, value)
    cores = os.cpu_count() or 1
    ray.init(
        num_cpus=num_cpus or max(4, 2 * cores),
        object_store_memory=int(object_store_gb * 2**30) if object_store_gb else None,
        _node_ip_address="127.0.0.1",
        _system_config={"num_workers_soft_limit": workers_soft_limit or cores},
        include_dashboard=False,
        log_to_driver=log_to_driver,
        configure_logging=configure_logging,
        logging_level=logging.WARNING,
    )
    return ray


def stop_ray() -> None:
    import ray

    global _local_cluster
    if ray.is_initialized():
        ray.shutdown()
    _local_cluster = False


_HINTS = {
    "label": "label.num_gpus_per_actor, label.num_cpus_per_actor or label.min_actors",
    "train": "train.use_gpu, train.cpus_per_worker or train.num_workers",
}


def ensure_resources(cfg, stage: str, poll_s: float = 10.0) -> None:
    """Return once the cluster can hold `stage`'s actors or workers (see `ssl_ray.resources`).

    A joined cluster is asked to scale up (`request_resources`) and waited for, up to
    `ray.resource_wait_s`: GPU nodes of an autoscaling cluster start at zero. A local cluster
    cannot grow, so a request it can never hold fails at once, naming the settings to change.
    """
    import time

    import ray
    from ray.autoscaler.sdk import request_resources

    from ssl_ray.core.resources import stage_bundles, unplaceable
    from ssl_ray.errors import ResourceError

    bundles = stage_bundles(cfg, stage)

    def problem() -> str | None:
        return unplaceable(bundles, [n["Resources"] for n in ray.nodes() if n["Alive"]])

    found = problem()
    if found is None:
        return
    if _local_cluster:
        raise ResourceError(f"{stage}: {found}; this local cluster cannot grow: lower {_HINTS[stage]}")
    request_resources(bundles=bundles)
    waited, deadline, last_log = 0.0, time.monotonic() + cfg.ray.resource_wait_s, 0.0
    try:
        while found is not None:
            if time.monotonic() >= deadline:
                raise ResourceError(
                    f"{stage}: {found}, after waiting {cfg.ray.resource_wait_s:g} s for the autoscaler "
                    f"(ray.resource_wait_s): check the cluster's node types, or lower {_HINTS[stage]}"
                )
            if waited - last_log >= 60 or not last_log:
                log.warning("%s: waiting for the autoscaler: %s", stage, found)
                last_log = waited or 1e-9
            time.sleep(min(poll_s, max(deadline - time.monotonic(), 0)))
            waited += poll_s
            found = problem()
    finally:
        request_resources(bundles=[])  # withdraw the request: the stage's own tasks keep their nodes


class LazyRemote:
    """A Ray remote function defined on first use, so importing a module needs no Ray."""

    def __init__(self, fn, **opts):
        self.fn, self.opts, self._remote = fn, opts, None

    def _get(self):
        if self._remote is None:
            import ray

            self._remote = ray.remote(**self.opts)(self.fn) if self.opts else ray.remote(self.fn)
        return self._remote

    def remote(self, *args, **kwargs):
        return self._get().remote(*args, **kwargs)

    def options(self, **opts):
        return self._get().options(**opts)


_remotes: dict = {}


def ray_map(fn, calls: list[tuple], **options) -> list:
    """`fn(*args)` for every args in `calls`, as parallel Ray tasks with `options`; the results
    in order."""
    import ray

    if fn not in _remotes:
        _remotes[fn] = ray.remote(fn)
    return ray_get([_remotes[fn].options(**options).remote(*args) for args in calls])


def ray_get(refs):
    """`ray.get`, re-raising our own errors (bad input, storage) without Ray's wrapper, so the
    CLI can still print them as one line."""
    import ray

    from ssl_ray.errors import SslRayError

    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, SslRayError):
            raise e.cause from None
        raise


def root_cause(error: BaseException) -> BaseException:
    """The exception behind Ray's wrappers: a task's (`RayTaskError.cause`), a Ray Train
    worker's (`WorkerGroupError.worker_failures`), the controller's, or a chained cause. Our
    own errors (`SslRayError`) are returned as soon as they are found."""
    from ssl_ray.errors import SslRayError

    seen: set[int] = set()
    while id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, SslRayError):
            return error
        failures = getattr(error, "worker_failures", None)
        inner = (
            getattr(error, "cause", None)
            or (next(iter(failures.values()), None) if failures else None)
            or getattr(error, "controller_failure", None)
            or error.__cause__
        )
        if not isinstance(inner, BaseException):
            break
        error = inner
    return error
