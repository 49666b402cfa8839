"""Where benchmark results go besides ``benchmarks/results/``: a copy under ``$OUT`` on the device machine,
whose files come back from a device call."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional


def copy_to_out(path: Path) -> Optional[Path]:
    """Copy ``path`` into ``$OUT`` when that is set (nothing when ``path`` already is there); the copy."""
    if not os.environ.get("OUT"):
        return None
    copy = Path(os.environ["OUT"]) / Path(path).name
    if copy.resolve() != Path(path).resolve():
        shutil.copy(path, copy)
    return copy
