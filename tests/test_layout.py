"""The toolkit's own modules can never be replaced by a user's files.

Most ML projects have a ``train.py``; many have ``schemas.py`` or ``evaluate.py``. Run from
such a folder, ``python -m distill`` puts that folder first on ``sys.path``: every command
must still run the toolkit's code, through ``python -m distill`` and the ``distill`` console
script alike. An optional extra that is missing is named; any other ImportError shows itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill.cli import SUBCOMMAND_EXTRAS, SUBCOMMANDS, main

REPO = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = Path(sys.executable).with_name("distill")
USER_FILES = ("train.py", "schemas.py", "evaluate.py", "core.py", "demo.py")
MARKER = "USER FILE IMPORTED"


@pytest.fixture(scope="module")
def user_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder like a user's ML project: its own modules named like ours, each of which
    fails loudly if anything imports it."""
    folder = tmp_path_factory.mktemp("user_project")
    for name in USER_FILES:
        (folder / name).write_text(f"raise SystemExit('{MARKER}: {name}')\n", encoding="utf-8")
    return folder


def _env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["DISTILL_PROGRESS"] = "0"
    return env


def _commands(how: str) -> list[str]:
    return [sys.executable, "-m", "distill"] if how == "module" else [str(CONSOLE_SCRIPT)]


def _run(how: str, args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*_commands(how), *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


EVERY_HELP = [[name, "--help"] for name in sorted(SUBCOMMANDS)] + [
    [group, sub, "--help"] for group, subs in SUBCOMMAND_EXTRAS.items() for sub in subs
] + [["datasets", "list", "--help"], ["schemas", "export", "--help"], ["--help"]]


@pytest.mark.parametrize("how", ["module", "script"])
def test_every_help_runs_the_toolkit_beside_a_users_files(user_project: Path, how: str) -> None:
    assert CONSOLE_SCRIPT.is_file(), "the distill console script is installed with the package"
    for args in EVERY_HELP:
        done = _run(how, args, user_project)
        output = done.stdout + done.stderr
        assert done.returncode == 0 and MARKER not in output, (args, output)
        assert "Usage: distill" in done.stdout, (args, output)


@pytest.mark.parametrize("how", ["module", "script"])
def test_schemas_export_writes_the_toolkits_schemas(user_project: Path, how: str,
                                                     tmp_path: Path) -> None:
    done = _run(how, ["schemas", "export", str(tmp_path / "out")], user_project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out" / "trace.schema.json").is_file()


# The console script's quick demo beside a user's files is also what .ci/check_wheel.sh runs
# (from the built wheel, in CI): slow here, so the default suite pays for one quick demo.
@pytest.mark.parametrize("how", ["module", pytest.param("script", marks=pytest.mark.slow)])
def test_the_quick_demo_runs_beside_a_users_files(user_project: Path, how: str,
                                                  tmp_path: Path) -> None:
    done = _run(how, ["demo", "--quick", "--out", str(tmp_path / "demo")], user_project,
                timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and MARKER not in output, output[-3000:]
    assert (tmp_path / "demo" / "report" / "demo.md").is_file()


def test_a_missing_optional_extra_is_named(samples_dir: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if `ray` were not installed
    code = main(["generate", "--samples", str(samples_dir), "--out", str(tmp_path / "gen"),
                 "--executor", "ray"])
    assert code == 2
    assert "pip install 'distill-vlm[ray]'" in capsys.readouterr().err


def test_any_other_import_error_shows_itself(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "broken_stage.py"
    broken.write_text("from distill.core.errors import NoSuchName\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(SUBCOMMANDS, "ingest", ("broken_stage:command", "a broken stage"))
    with pytest.raises(ImportError, match="NoSuchName"):
        main(["ingest", "--help"])


@pytest.fixture
def samples_dir(tmp_path: Path) -> Path:
    from distill.ingest.pipeline import IngestOptions, ingest
    from distill.ingest.sources.digits import DigitsConfig, iter_digits

    out = tmp_path / "items"
    ingest(iter_digits(DigitsConfig(counts={"train": 4})), IngestOptions(out=out))
    return out
