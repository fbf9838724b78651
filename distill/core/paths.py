"""Where the files that ship with the repository live (data/, prompts/), and how names
become safe file and identifier names."""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO_ROOT = Path(os.environ.get("DISTILL_HOME", Path(__file__).resolve().parents[2]))
DATA_DIR = REPO_ROOT / "data"
PROMPTS_DIR = REPO_ROOT / "prompts"


def slug(value: object, default: str = "default") -> str:
    """A category name usable as an identifier: 'Figure QA / charts' -> 'figure_qa_charts'."""
    text = re.sub(r"[^0-9a-zA-Z]+", "_", str(value or "")).strip("_").lower()
    return text[:200] or default
