"""The `ray job submit` round trip: a real local head on 127.0.0.1, a submitted optimization, its outputs."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import is_loopback

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _kill_tree_of(marker: str) -> None:
    """Kill every process whose command line names our private temp dir (never `ray stop`,
    which would also stop other Ray instances on this machine)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if marker.encode() in cmd and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 9)
            except OSError:
                pass


@pytest.fixture
def ray_head():
    ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    tmp = tempfile.mkdtemp(prefix="iosray_head_")
    dash, client, agent = _free_ports(3)
    # Without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, `ray start` on Linux swaps --node-ip-address=127.0.0.1
    # for the host's address and listens on every interface (see ios_ray.distributed.cluster).
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    log = open(os.path.join(tmp, "head.log"), "w")
    proc = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--port=0", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
         f"--dashboard-agent-listen-port={agent}", "--num-cpus=2", f"--temp-dir={tmp}",
         "--disable-usage-stats"], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                urllib.request.urlopen(url + "/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # 401: up, and token authentication is on
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("ray head exited: " + open(os.path.join(tmp, "head.log")).read()[-2000:])
                time.sleep(1)
        else:
            raise RuntimeError("ray head did not come up in 90 s")
        yield url, env, proc.pid
    finally:
        proc.kill()
        _kill_tree_of(tmp)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_ray_job_submit_round_trip(ray_head, tmp_path, listeners):
    url, env, head_pid = ray_head
    ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    out = tmp_path / "schedule.json"
    table = tmp_path / "table"
    runtime_env = json.dumps({"excludes": [".git", ".venv", ".whl", ".gpuwhl", ".site", "benchmarks/results"]})
    cmd = [ray_bin, "job", "submit", "--address", url, "--working-dir", str(REPO), "--runtime-env-json",
           runtime_env, "--", sys.executable, "-m", "ios_ray.cli", "optimize", "sample", "--workers", "1", "--cost", "cpu",
           "--warmup", "0", "--number", "1", "--repeat", "1", "--table", str(table), "--out", str(out),
           "--no-progress"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=str(REPO))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "succeeded" in (res.stdout + res.stderr)
    found = listeners(head_pid)
    assert found and all(is_loopback(address) for address, *_ in found), found  # job API and all: loopback only
    assert out.exists()

    from ios_ray.costs.table import CostTable
    from ios_ray.graph.serialize import load_graph
    g = load_graph(str(out))
    assert g.has_schedule() and g.num_operators() >= 3
    rows = CostTable(str(table)).read_all()
    assert rows.num_rows > 0
