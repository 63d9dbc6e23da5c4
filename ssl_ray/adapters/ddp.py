"""Where Ray Train's torch.distributed group listens.

Ray Train's default rendezvous (`init_method="env"`) starts a TCPStore on rank 0 that listens
on every interface, and gloo/NCCL bind their connections to whatever interface the hostname
resolves to. A local run must listen on loopback only; a cluster's workers only on their
node's Ray address. `LocalDDPConfig` (a `TorchConfig` for `TorchTrainer(torch_config=...)`)
does that:

- every worker binds gloo and NCCL to the interface that carries its node's Ray address
  (`GLOO_SOCKET_IFNAME`, `NCCL_SOCKET_IFNAME`; on a local cluster that is `lo`);
- when all workers share one node (a local run, or one GPU node), the group meets through a
  file store (`init_method="file://..."`) instead of a TCPStore: no rendezvous listener at
  all. Across nodes the TCPStore stays (rank 0's node, a free port; docs/cluster.md).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass


def interface_of(address: str) -> str | None:
    """The name of the network interface that carries `address`, or None."""
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.address == address for a in addrs):
            return name
    return None


def _bind_collectives() -> str:
    """In a worker: gloo and NCCL connections on its node's Ray address; that address."""
    import ray

    address = ray.util.get_node_ip_address()
    name = interface_of(address)
    if name:
        os.environ["GLOO_SOCKET_IFNAME"] = name
        os.environ["NCCL_SOCKET_IFNAME"] = name
    return address


def _backend_class():
    from ray.train.torch.config import _set_torch_distributed_env_vars, _setup_torch_process_group, _TorchBackend

    class LocalDDPBackend(_TorchBackend):
        def on_start(self, worker_group, backend_config):
            import ray

            addresses = worker_group.execute(_bind_collectives)
            if len(set(addresses)) > 1:  # several nodes: Ray's TCPStore rendezvous
                return super().on_start(worker_group, backend_config)
            worker_group.execute(_set_torch_distributed_env_vars)
            store = os.path.join(tempfile.gettempdir(), f"ssl_ray-ddp-{uuid.uuid4().hex}")
            ray.get(
                [
                    worker_group.execute_single_async(
                        i,
                        _setup_torch_process_group,
                        backend=backend_config.backend,
                        world_rank=i,
                        world_size=len(worker_group),
                        init_method=f"file://{store}",
                        timeout_s=backend_config.timeout_s,
                    )
                    for i in range(len(worker_group))
                ]
            )

    return LocalDDPBackend


def local_ddp_config():
    """A `TorchConfig` whose group listens only where `LocalDDPConfig`'s docstring says."""
    from ray.train.torch import TorchConfig

    @dataclass
    class LocalDDPConfig(TorchConfig):
        @property
        def backend_cls(self):
            return _backend_class()

    return LocalDDPConfig()
