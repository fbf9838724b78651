"""Where the files that ship with the toolkit live (data/, prompts/), and how names
become safe file and identifier names.

The embedded data, configs and prompts are package data: a wheel carries them inside
`distill/` (`distill/data`, `distill/prompts`; in a checkout those are links to the
top-level folders), so an install from an index runs the demo from any folder. They are
found through `importlib.resources`, never relative to a repository. `DISTILL_HOME`
overrides the whole set with a folder holding `data/` and `prompts/` of its own.
"""

from __future__ import annotations

import hashlib
import os
import re
from importlib import resources
from pathlib import Path


def _shipped_root() -> Path:
    """The folder holding `data/` and `prompts/`: DISTILL_HOME, else the installed package."""
    home = os.environ.get("DISTILL_HOME")
    if home:
        return Path(home)
    return Path(str(resources.files("distill")))


SHIPPED_ROOT = _shipped_root()
DATA_DIR = SHIPPED_ROOT / "data"
PROMPTS_DIR = SHIPPED_ROOT / "prompts"
# The folder above the package: a checkout's root, or site-packages for an install.
PACKAGE_PARENT = Path(__file__).resolve().parents[2]


def relative_to(path: str | Path, folder: Path) -> str:
    """``path`` (absolute, or relative to the working folder) relative to ``folder``: how a
    manifest or a result names what it points at, so that a project moved as a whole (or
    copied to another machine) still finds it."""
    return os.path.relpath(Path(path).expanduser().resolve(), Path(folder).resolve())


def slug(value: object, default: str = "default", *, max_chars: int | None = 200) -> str:
    """A category name usable as an identifier: 'Figure QA / charts' -> 'figure_qa_charts'
    (cut at ``max_chars``; None: whole, for a caller that hashes what is too long)."""
    text = re.sub(r"[^0-9a-zA-Z]+", "_", str(value or "")).strip("_").lower()
    return text[:max_chars] or default


_NOT_IN_IDS = re.compile(r"[^0-9A-Za-z._-]+")
MAX_ID_PART = 200


def id_part(value: object) -> str:
    """A benchmark's own id as part of a sample id, one to one.

    Letters (in their case), digits, ``.``, ``_`` and ``-`` stay as written; every other
    character is percent-encoded (its UTF-8 bytes; ``%`` itself too). So two ids a benchmark
    keeps apart stay apart (``A-1`` and ``a_1``, which ``slug`` made one), and an id reads
    as the benchmark wrote it (``validation_Art_1``). One longer than ``MAX_ID_PART`` keeps
    its start and ends with 16 hex characters of its hash."""
    text = str(value)
    encoded = _NOT_IN_IDS.sub(lambda match: "".join(
        f"%{byte:02X}" for byte in match.group().encode("utf-8", "surrogatepass")), text)
    if len(encoded) <= MAX_ID_PART:
        return encoded
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{encoded[:MAX_ID_PART - 17]}-{digest}"
