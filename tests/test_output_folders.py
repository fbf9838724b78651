"""--overwrite removes only what the stage itself wrote, a link is never swapped for a
folder, and one stage's output is never another stage's folder (distill.core.folders).

Each test runs the real CLI over real folders and checks, file by file (path and sha256),
that nothing a user owns was touched when a run is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.cli import main
from distill.core.errors import DistillError
from distill.core.folders import check_replaceable
from distill.core.paths import DATA_DIR
from distill.filter.pipeline import FilterOptions, run_filter
from distill.filter.policy import parse_policy
from distill.schemas import file_sha256
from testing.generate import builtin_teacher, make_ingest, write_teachers
from tests.conftest import png_bytes


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``: files by sha256, links by target, folders by name."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        found[name] = (f"-> {path.readlink()}" if path.is_symlink() else
                       file_sha256(path) if path.is_file() else "dir")
    return found


def _source(folder: Path, items: int = 3, answer: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "items.jsonl", "w", encoding="utf-8") as handle:
        for i in range(items):
            (folder / f"{i}.png").write_bytes(png_bytes(i, (8, 8)))
            handle.write(json.dumps({"id": f"item-{i}", "image": f"{i}.png",
                                     "question": "How many?", "answer": str(i + answer)}) + "\n")
    return folder / "items.jsonl"


def _convert_source(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(3):
        (folder / f"{i}.png").write_bytes(png_bytes(i, (8, 8)))
        records.append({"pid": str(i), "question": "How many?", "answer": str(i),
                        "image": f"{i}.png", "question_type": "free_form",
                        "answer_type": "integer"})
    (folder / "testmini.json").write_text(json.dumps(records))
    return folder / "testmini.json"


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_ingest_overwrite_into_its_own_input_folder_deletes_nothing(tmp_path: Path, capsys):
    source = _source(tmp_path / "src")
    (tmp_path / "src" / "notes.txt").write_text("my notes")
    before = snapshot(tmp_path / "src")
    code = main(["ingest", "jsonl", str(source), "--out", str(tmp_path / "src"), "--overwrite"])
    assert code == 2 and "holds this run's own input" in _error(capsys)
    assert snapshot(tmp_path / "src") == before


def test_eval_convert_overwrite_into_its_own_input_folder_deletes_nothing(tmp_path, capsys):
    source = _convert_source(tmp_path / "bench")
    before = snapshot(tmp_path / "bench")
    code = main(["eval", "convert", "mathvista", str(source), "--out", str(tmp_path / "bench"),
                 "--overwrite"])
    assert code == 2 and "holds this run's own input" in _error(capsys)
    assert snapshot(tmp_path / "bench") == before


def test_overwrite_beside_a_users_own_files_names_them_and_deletes_none(tmp_path, capsys):
    source = _source(tmp_path / "src")
    out = tmp_path / "items"
    assert main(["ingest", "jsonl", str(source), "--out", str(out)]) == 0
    (out / "notes.txt").write_text("my notes")
    (out / "samples" / "train" / "mine.jsonl").write_text("{}\n")
    before = snapshot(out)
    assert main(["ingest", "jsonl", str(source), "--out", str(out), "--overwrite"]) == 2
    error = _error(capsys)
    assert "2 file(s) it did not write" in error and "notes.txt" in error
    assert "samples/train/mine.jsonl" in error and "nothing was deleted" in error
    assert snapshot(out) == before
    # Once they are moved away, the folder ingest wrote is replaced as before.
    (out / "notes.txt").unlink()
    (out / "samples" / "train" / "mine.jsonl").unlink()
    _source(tmp_path / "src", answer=5)
    assert main(["ingest", "jsonl", str(source), "--out", str(out), "--overwrite"]) == 0
    assert '"answer":"5"' in (out / "samples" / "train" / "part-00000.jsonl").read_text()


def test_overwrite_of_a_folder_ingest_never_wrote_is_refused(tmp_path: Path, capsys):
    source = _source(tmp_path / "src")
    out = tmp_path / "documents"
    out.mkdir()
    for i in range(7):
        (out / f"letter-{i}.txt").write_text(str(i))
    before = snapshot(out)
    assert main(["ingest", "jsonl", str(source), "--out", str(out), "--overwrite"]) == 2
    assert "7 file(s) it did not write" in _error(capsys) and snapshot(out) == before


def test_overwrite_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path, capsys):
    source = _source(tmp_path / "src")
    target, link = tmp_path / "disk" / "items", tmp_path / "items"
    target.mkdir(parents=True)
    link.symlink_to(target, target_is_directory=True)
    assert main(["ingest", "jsonl", str(source), "--out", str(link)]) == 0
    _source(tmp_path / "src", answer=5)
    assert main(["ingest", "jsonl", str(source), "--out", str(link), "--overwrite"]) == 0
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert '"answer":"5"' in (target / "samples" / "train" / "part-00000.jsonl").read_text()
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["items"]  # no leftovers


def test_a_link_or_a_foreign_entry_inside_out_is_never_the_stages(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "manifest.json").write_text("{}")
    (tmp_path / "elsewhere").mkdir()
    (out / "images" / "aa").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(DistillError, match=r"1 file\(s\).*images/aa/"):
        check_replaceable(out, "ingest", lambda name: True)


@pytest.fixture
def generated(tmp_path: Path) -> tuple[Path, Path]:
    samples = make_ingest(tmp_path / "items", {"train": 4})
    teachers = write_teachers(tmp_path / "teachers.yaml",
                              {"knn": builtin_teacher(k=1) | {"options": {"pool_seed": 0}}})
    assert main(["generate", "--samples", str(samples), "--teachers", str(teachers),
                 "--out", str(tmp_path / "traces")]) == 0
    return samples, teachers


@pytest.mark.parametrize("out", ["items", "items/traces", "traces-of-items/../items"])
def test_generate_never_writes_into_its_samples_folder(tmp_path, generated, capsys, out):
    samples, teachers = generated
    capsys.readouterr()
    before = snapshot(samples)
    code = main(["generate", "--samples", str(samples), "--teachers", str(teachers),
                 "--out", str(tmp_path / out)])
    assert code == 2 and "input folder" in _error(capsys)
    assert snapshot(samples) == before


def test_a_stage_refuses_an_out_that_another_stage_wrote(tmp_path, generated, capsys):
    samples, teachers = generated
    other = make_ingest(tmp_path / "other-items", {"train": 2})
    before = snapshot(other)
    capsys.readouterr()
    assert main(["generate", "--samples", str(samples), "--teachers", str(teachers),
                 "--out", str(other)]) == 2
    assert "holds the output of ingest, not of generate" in _error(capsys)
    assert snapshot(other) == before
    judge = DATA_DIR / "judges" / "digits.yaml"
    assert main(["judge", "--traces", str(tmp_path / "traces"), "--judge", str(judge),
                 "--out", str(other)]) == 2
    assert "holds the output of ingest" in _error(capsys)


def test_filter_never_takes_a_users_folder_or_its_input_for_the_store(tmp_path, generated):
    users = tmp_path / "home"
    (users / "tmp").mkdir(parents=True)
    (users / "tmp" / "draft.txt").write_text("keep me")
    before = snapshot(users)
    policy = parse_policy("name: all\nsplits: null\nrules: {}\n")
    with pytest.raises(DistillError, match="not a dataset store and is not empty"):
        run_filter(FilterOptions(traces=tmp_path / "traces", store=users, policy=policy))
    assert snapshot(users) == before
    with pytest.raises(DistillError, match="input folder"):
        run_filter(FilterOptions(traces=tmp_path / "traces", store=tmp_path / "traces",
                                 policy=policy))
    result = run_filter(FilterOptions(traces=tmp_path / "traces", store=tmp_path / "store",
                                      policy=policy))
    again = run_filter(FilterOptions(traces=tmp_path / "traces", store=tmp_path / "store",
                                     policy=policy))
    assert again.version == result.version and not again.created


def test_train_never_writes_into_its_data_or_over_its_init(tmp_path: Path, capsys) -> None:
    samples = make_ingest(tmp_path / "items", {"train": 4})
    before = snapshot(samples)
    args = ["train", "--config", "cot", "--set", "model=test-micro", "--data", str(samples)]
    assert main([*args, "--out", str(samples)]) == 2
    assert "input folder" in _error(capsys)
    assert main([*args, "--out", str(samples / "run")]) == 2
    assert "input folder" in _error(capsys)
    (tmp_path / "run" / "final").mkdir(parents=True)
    assert main([*args, "--init", str(tmp_path / "run" / "final"), "--out",
                 str(tmp_path / "run")]) == 2
    assert "holds this run's own input" in _error(capsys)
    assert snapshot(samples) == before


@pytest.mark.parametrize("manifest", [b"[" * 100_000 + b"]" * 100_000,
                                      b'{"stage": "ingest", "stage": "train"}', b"\xff\xfe"])
def test_an_out_with_an_unreadable_manifest_is_refused_by_name(tmp_path, capsys, manifest):
    out = tmp_path / "someone-else"
    out.mkdir()
    (out / "manifest.json").write_bytes(manifest)
    samples = make_ingest(tmp_path / "items", {"train": 4})
    code = main(["train", "--config", "cot", "--set", "model=test-micro", "--data",
                 str(samples), "--out", str(out)])
    assert code == 2 and "manifest.json cannot be read" in _error(capsys)
    assert (out / "manifest.json").read_bytes() == manifest


@pytest.mark.parametrize("manifest", [b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe{}"])
def test_train_data_with_an_unreadable_manifest_is_one_located_error(tmp_path, capsys,
                                                                      manifest):
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_bytes(manifest)
    code = main(["train", "--config", "cot", "--set", "model=test-micro", "--data", str(data),
                 "--out", str(tmp_path / "run")])
    assert code == 2 and "manifest.json" in _error(capsys)
