"""Where the files that ship with the repository live (data/, prompts/)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(os.environ.get("DISTILL_HOME", Path(__file__).resolve().parents[1]))
DATA_DIR = REPO_ROOT / "data"
PROMPTS_DIR = REPO_ROOT / "prompts"
