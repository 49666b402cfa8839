"""Trim the Ray wheel in ``.whl/`` further, so the working tree and the wheels fit a device call (64 MiB).

    python3 benchmarks/trim_ray_wheel.py [.whl]

``../shared/device/ray_wheels.sh`` leaves Ray's Java jars out (about 48 MB left); with the tree's stored
cost tables that came to 66 MB. This drops the Ray libraries ios_ray never imports (RLlib, Data, Serve,
Train, Tune, LLM) and the dashboard's web client (about 40 MB left), rewriting the wheel in place and its
RECORD to match. Every device call of session 7 after the first two ran Ray's actors on the H200 from the
trimmed wheel. Running it again changes nothing.
"""
from __future__ import annotations

import glob
import os
import sys
import tempfile
import zipfile

DROP = ("ray/rllib/", "ray/data/", "ray/serve/", "ray/train/", "ray/tune/", "ray/llm/", "ray/dashboard/client/build/")


def trim(path: str) -> int:
    """Rewrite the wheel at ``path`` without ``DROP``; returns the number of files left out."""
    dropped = 0
    fd, tmp = tempfile.mkstemp(suffix=".whl", dir=os.path.dirname(path) or ".")
    os.close(fd)
    try:
        with zipfile.ZipFile(path) as zi, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zo:
            for info in zi.infolist():
                if info.filename.startswith(DROP):
                    dropped += 1
                    continue
                data = zi.read(info.filename)
                if info.filename.endswith(".dist-info/RECORD"):
                    data = b"\n".join(line for line in data.split(b"\n")
                                      if not line.startswith(tuple(d.encode() for d in DROP)))
                zo.writestr(info, data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dropped


def main(argv=None) -> int:
    folder = (argv if argv is not None else sys.argv[1:] or [".whl"])[0]
    wheels = glob.glob(os.path.join(folder, "ray-*.whl"))
    if not wheels:
        print(f"no ray-*.whl in {folder}", file=sys.stderr)
        return 2
    for path in wheels:
        before = os.path.getsize(path)
        dropped = trim(path)
        print(f"{os.path.basename(path)}: {dropped} files left out, {before / 1e6:.1f} -> "
              f"{os.path.getsize(path) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
