"""Where the tests find the real speech of ``../shared/data`` (beside the checkout).

The folder exists on the developers' machines and in CI, never in a user's clone: tests that
use it call :func:`shared_data_dir` and skip with a clear reason when it returns ``None``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir(name: str) -> Optional[Path]:
    """``<repo>/../shared/data/<name>`` (or ``$XTRANS_SHARED_DATA/<name>``) if it exists, else None."""
    base = Path(os.environ.get("XTRANS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    path = base / name
    return path if path.is_dir() else None
