"""One package, ``distill``, though two of its folders live at the top of the repository.

``schemas/`` and ``train/`` sit beside ``distill/`` (the layout the project was specified
with) and are part of the package through the links ``distill/schemas -> ../schemas`` and
``distill/train -> ../train`` (``data`` and ``prompts`` likewise). Two things can go wrong,
and both stop at once with what to do, instead of failing later and obscurely:

- a checkout made without symbolic links (``git config core.symlinks false``, the default
  on Windows without Developer Mode) holds each link as a small text file naming its
  target: ``import distill`` says so (``check_links``);
- the repository root on ``sys.path`` (pytest's ``pythonpath``, a script run from the
  root) would let ``import train`` or ``import schemas`` load the same files a second
  time as separate modules, with their own classes (a ``schemas.Sample`` that is not a
  ``distill.schemas.Sample``) and their own state: the folders refuse any name but their
  own (``refuse_second_name``).
"""

from __future__ import annotations

import os

LINKS = ("schemas", "train", "data", "prompts")


def check_links(package_dir: str) -> None:
    """Every linked folder of the package is a folder (in a wheel it is a copy)."""
    for name in LINKS:
        path = os.path.join(package_dir, name)
        if os.path.isdir(path):
            continue
        if os.path.isfile(path):
            raise ImportError(
                f"{path} is a small file, not the link to ../{name} it stands for: this "
                "checkout was made without symbolic links (git core.symlinks=false, the "
                "default on Windows without Developer Mode). Turn them on and check the "
                "links out again: `git config core.symlinks true` then `git checkout -- "
                f"{' '.join('distill/' + link for link in LINKS)}` (on Windows, enable "
                "Developer Mode first), or install a wheel built where the links are links.")
        raise ImportError(f"{path} is missing: the package needs its link to ../{name} "
                          "(a checkout of the whole repository, or an installed wheel)")


def refuse_second_name(name: str, own: str, init_file: str) -> None:
    """Stop a linked folder (its ``__init__.py`` is ``init_file``) from being imported under
    any name but its own."""
    if name != own:
        raise ImportError(
            f"{os.path.dirname(init_file)} is the toolkit's package {own!r} and cannot be "
            f"imported as {name!r} (the repository root is on sys.path): that would load its "
            f"modules a second time, as different objects. Import {own} instead "
            f"(`python -m {own}.<module>` for a module's command).")
