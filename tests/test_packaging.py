"""What installs and deploys ios_ray: the gpu extra and the cluster configs (read, not run)."""
import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _gpu_extra():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]


def test_gpu_extra_brings_everything_but_the_driver():
    """Regression: `pip install 'ios-ray[gpu]'` left out the cuDNN library and CuPy's CUDA runtime and NVRTC
    (checked with pip's resolver: `pip install --dry-run --report - '.[gpu]'`)."""
    extra = _gpu_extra()
    names = {re.split(r"[\[<>=!~ ;]", r)[0]: r for r in extra}
    cupy = next(n for n in names if n.startswith("cupy-cuda"))
    assert "[ctk]" in names[cupy]  # CuPy's extra: CUDA runtime, NVRTC and CUDA libraries as wheels
    cudnn = next(n for n in names if re.fullmatch(r"nvidia-cudnn-cu\d+", n))  # the cuDNN library itself
    assert "nvidia-cudnn-frontend" in names
    assert re.search(r"\d+", cupy).group() == re.search(r"\d+", cudnn).group()  # one CUDA major: 13 and 13


def test_cluster_configs_install_the_gpu_extra():
    """Regression: both configs installed cupy-cuda12x while the gpu extra pins cupy-cuda13x."""
    for path in ("cluster/ray-cluster.yaml", "cluster/kuberay-rayjob.yaml"):
        text = (REPO / path).read_text()
        assert "cupy-cuda12x" not in text and "[gpu]" in text, path


def test_kuberay_job_submits_and_stays_private():
    """Regression: the head's dashboard was bound to 127.0.0.1, but KubeRay's submitter and operator reach
    the job API through the head service, so the job never submitted."""
    docs = list(yaml.safe_load_all((REPO / "cluster/kuberay-rayjob.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["RayJob"]  # no Ingress, no extra Service
    spec = docs[0]["spec"]
    assert spec.get("submissionMode", "K8sJobMode") == "K8sJobMode"
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"].get("dashboard-host", "0.0.0.0") == "0.0.0.0"  # reachable via the service
    assert head["serviceType"] == "ClusterIP"
    assert cluster["authOptions"]["mode"] == "token"
    major, minor = (int(x) for x in cluster["rayVersion"].split(".")[:2])
    assert (major, minor) >= (2, 52)  # token authentication needs Ray 2.52+


def test_cluster_launcher_turns_token_authentication_on():
    """Regression: the launcher config said token authentication "can be switched on"; the README says on."""
    config = yaml.safe_load((REPO / "cluster/ray-cluster.yaml").read_text())
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        start = next(c for c in commands if "ray start" in c)
        assert "RAY_AUTH_MODE=token" in start
    assert any("auth_token" in target for target in config["file_mounts"])
    head_start = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "can be switched on" not in (REPO / "cluster/ray-cluster.yaml").read_text()


def test_a_test_session_leaves_no_cache_directory_behind(tmp_path):
    """Regression: every test session left an empty ios_ray_test_cache_* directory in the temp folder."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONPATH=str(REPO))
    env.pop("IOS_RAY_CACHE", None)
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/test_packaging.py::test_gpu_extra_brings_everything_but_the_driver"],
                         cwd=str(REPO), env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:]
    assert not [p for p in os.listdir(tmp_path) if p.startswith("ios_ray_test_cache_")]
