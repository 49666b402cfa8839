"""The local Ray instance ios_ray starts listens on the loopback interface only."""
import os
import time

import pytest
import ray

from conftest import is_loopback
from ios_ray.distributed.cluster import connect

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@ray.remote(num_cpus=1)
class _Probe:
    def pid(self):
        return os.getpid()


def test_local_ray_instance_listens_only_on_loopback(listeners):
    """Regression: connect() asked for 127.0.0.1, but Ray swapped it for the host's address and its GCS,
    raylet, workers and agents listened on every interface."""
    if ray.is_initialized():
        ray.shutdown()
    assert connect(num_cpus=2, num_gpus=0)
    try:
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        actor = _Probe.remote()
        ray.get(actor.pid.remote())  # a worker process is up and serving
        time.sleep(2)                 # agents finish binding their ports
        found = listeners(os.getpid())
        assert len(found) >= 3, found  # GCS, raylet, workers at least: the scan sees Ray's processes
        outside = [f for f in found if not is_loopback(f[0])]
        assert not outside, f"Ray processes listening beyond loopback: {outside}"
    finally:
        ray.shutdown()
