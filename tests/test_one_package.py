"""One package: train/ and schemas/ load once, as distill.train and distill.schemas, and a
checkout that lost its links says what to do when distill is imported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.parametrize("name", ["train", "schemas", "train.loop", "schemas.sample"])
def test_a_linked_folder_refuses_its_bare_name(name: str) -> None:
    # From the repository root (as under pytest's pythonpath) the folders are importable
    # by their bare names: that would be a second copy of every module in them.
    done = _python(f"import {name}", REPO)
    package = name.split(".")[0]
    assert done.returncode != 0
    assert f"cannot be imported as {package!r}" in done.stderr, done.stderr
    assert f"Import distill.{package} instead" in done.stderr


def test_the_toolkit_imports_each_folder_once_under_its_own_name() -> None:
    done = _python("import sys, distill.train.loop, distill.schemas, distill.cli; "
                   "print(sorted(m for m in sys.modules if m.split('.')[0] in "
                   "('train', 'schemas')))", REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert "train" not in sys.modules and "schemas" not in sys.modules  # this test session


def _package_copy(root: Path) -> Path:
    """distill/ with its two modules that run at import, and links to the real folders."""
    package = root / "distill"
    package.mkdir()
    for name in ("__init__.py", "_one_package.py"):
        shutil.copy(REPO / "distill" / name, package / name)
    for name in ("schemas", "train", "data", "prompts"):
        (package / name).symlink_to(REPO / name, target_is_directory=True)
    return package


def test_a_checkout_without_symlinks_is_told_what_to_do(tmp_path: Path) -> None:
    package = _package_copy(tmp_path)
    assert _python("import distill.train, distill.schemas", tmp_path).returncode == 0
    # git with core.symlinks=false writes a link as a small file holding its target
    (package / "train").unlink()
    (package / "train").write_text("../train", encoding="utf-8")
    done = _python("import distill", tmp_path)
    assert done.returncode != 0
    assert f"{package / 'train'} is a small file, not the link to ../train" in done.stderr
    assert "git config core.symlinks true" in done.stderr, done.stderr


def test_a_missing_link_is_named(tmp_path: Path) -> None:
    package = _package_copy(tmp_path)
    (package / "schemas").unlink()
    done = _python("import distill", tmp_path)
    assert done.returncode != 0
    assert f"{package / 'schemas'} is missing" in done.stderr, done.stderr
