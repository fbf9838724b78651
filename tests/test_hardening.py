"""Issue 23's classes of hostile or unlucky input, one test each, through the real CLI
where a user meets them (the fuzz harness, test_fuzz_inputs.py, covers them at random;
these pin each one down). Folder replacing under SIGKILL: test_replace_kill.py."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from distill.cli import main
from distill.core.errors import InputError
from distill.ingest.converters import iter_converted
from tests.conftest import png_bytes, write_jsonl
from tests.helpers import harness_files as hf


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def rows_of(fmt: str, source: Path) -> list:
    return list(iter_converted(fmt, source))


ROW = {"image": "a.png", "question": "How many?", "answer": "2"}


# 2. lock files -----------------------------------------------------------------------------


def test_a_symlink_at_the_lock_path_is_refused_and_its_target_untouched(
        image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (tmp_path / ".out.lock").symlink_to(precious)
    source = write_jsonl(image_dir / "items.jsonl", [{"id": "a", **ROW}])
    code, err = run(["ingest", "jsonl", str(source), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "is a symbolic link" in one_error(err)
    assert precious.read_text() == "keep me" and not (tmp_path / "out").exists()


def test_a_folder_at_the_lock_path_is_a_clear_error(
        image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / ".out.lock").mkdir()
    source = write_jsonl(image_dir / "items.jsonl", [{"id": "a", **ROW}])
    code, err = run(["ingest", "jsonl", str(source), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and f"{tmp_path / '.out.lock'} is a folder" in one_error(err)


# 3, 4, 6. the text layer: encodings, nesting, duplicate keys --------------------------------


def test_bad_rows_of_every_text_kind_go_to_rejects_under_skip(
        image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = json.dumps({"id": "a", **ROW})
    source = image_dir / "items.jsonl"
    source.write_bytes(b"\n".join([
        good.encode(),
        json.dumps({"id": "b", **ROW, "question": "caf\u00e9"}).encode().replace(
            b"\\u00e9", b"\xe9"),  # Latin-1, not UTF-8
        ('{"id": "c", "meta": ' + "[" * 100_000 + "]" * 100_000 + "}").encode(),
        json.dumps({"id": "d", **ROW}).replace('"id": "d"', '"id": "d", "id": "e"').encode(),
        json.dumps({"id": "f", **ROW, "question": "q \ud800"}).encode(),  # a lone surrogate
    ]) + b"\n")
    out = tmp_path / "out"
    code, _ = run(["ingest", "jsonl", str(source), "--out", str(out), "--on-error", "skip"],
                  capsys)
    assert code == 0
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["location"], r["reason"]) for r in rejects] == [
        (f"{source}:2", "bad_encoding"), (f"{source}:3", "bad_json"),
        (f"{source}:4", "duplicate_key"), (f"{source}:5", "bad_encoding")]
    assert rejects[2]["field"] == "id" and "appears twice" in rejects[2]["message"]


def test_a_json_benchmark_file_with_a_duplicated_key_is_refused(
        image_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = image_dir / "testmini.json"
    source.write_text('{"1": {"pid": "1", "question": "q", "answer": "2", "image": "a.png"},'
                      ' "1": {"pid": "2", "question": "q", "answer": "3", "image": "a.png"}}')
    code, err = run(["eval", "convert", "mathvista", str(source), "--out",
                     str(image_dir / "out")], capsys)
    assert code == 2 and "key '1' appears twice" in one_error(err) and str(source) in err


def test_a_non_utf8_tsv_row_is_a_row_error(image_dir: Path) -> None:
    source = image_dir / "MMStar.tsv"
    image = base64.b64encode(png_bytes(1)).decode()
    source.write_bytes(b"index\tquestion\tA\tB\tanswer\tcategory\timage\n"
                       + f"1\tWhich?\tx\ty\tA\tc\t{image}\n".encode()
                       + f"2\tWhich \xe9?\tx\ty\tA\tc\t{image}\n".encode("latin-1"))
    rows = rows_of("mmstar", source)
    assert not isinstance(rows[0], InputError)
    assert isinstance(rows[1], InputError) and rows[1].location == f"{source}:3"


# 5, 7. image structs and base64 ------------------------------------------------------------


@pytest.mark.parametrize(("value", "message"), [
    (10**12, "field 'image.bytes': must be bytes, got int"),
    ("not base64 nor a path?", "not found"),
    ([1, 2], "no image"),
])
def test_an_image_struct_of_the_wrong_type_is_a_row_error(tmp_path: Path, value: object,
                                                          message: str) -> None:
    source = tmp_path / "ai2d.jsonl"
    image = {"bytes": value, "path": None} if isinstance(value, int) else value
    write_jsonl(source, [{"question": "q?", "options": ["x", "y"], "answer": "1",
                          "image": image}])
    with pytest.raises(InputError, match=message):
        for row in iter_converted("ai2d", source):
            if isinstance(row, InputError):
                raise row
            from distill.ingest.pipeline import IngestOptions, ingest
            ingest([row], IngestOptions(out=tmp_path / "out"))


def test_a_small_base64_image_is_recognised_by_its_content(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    tiny = base64.b64encode(buffer.getvalue()).decode()
    assert len(tiny) < 200
    source = tmp_path / "MMStar.tsv"
    source.write_text("index\tquestion\tA\tB\tanswer\tcategory\timage\n"
                      f"1\tWhich?\tx\ty\tA\tc\t{tiny}\n")
    (row,) = rows_of("mmstar", source)
    assert row.image_bytes == buffer.getvalue() and row.image_path is None


# 8. id collisions ----------------------------------------------------------------------------


def test_ids_that_differ_in_case_or_punctuation_stay_apart(
        image_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The id map is one to one (issue 34: ``A-1`` and ``a_1`` were refused as one id)."""
    source = write_jsonl(image_dir / "ai2d.jsonl", [
        {"id": "A-1", "question": "q?", "options": ["x", "y"], "answer": "1", "image": "a.png"},
        {"id": "a_1", "question": "q?", "options": ["x", "y"], "answer": "0", "image": "b.png"},
        {"id": "a 1/x%", "question": "q?", "options": ["x", "y"], "answer": "0",
         "image": "b.png"},
    ])
    out = image_dir / "o"
    code, _ = run(["eval", "convert", "ai2d", str(source), "--out", str(out)], capsys)
    assert code == 0
    from distill.core.evalsets import load_eval_set

    samples = load_eval_set(out).samples
    assert [(s.id, s.meta["source_id"]) for s in samples] == [
        ("ai2d-A-1", "A-1"), ("ai2d-a_1", "a_1"), ("ai2d-a%201%2Fx%25", "a 1/x%")]


def test_one_id_given_twice_names_both_rows(image_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    source = write_jsonl(image_dir / "ai2d.jsonl", [
        {"id": "A-1", "question": "q?", "options": ["x", "y"], "answer": "1", "image": "a.png"},
        {"id": "A-1", "question": "q?", "options": ["x", "y"], "answer": "0", "image": "b.png"},
    ])
    code, err = run(["eval", "convert", "ai2d", str(source), "--out", str(image_dir / "o")],
                    capsys)
    line = one_error(err)
    assert code == 2 and f"{source}:2" in line and f"{source}:1" in line


# 9. corrupt parquet ------------------------------------------------------------------------


def test_corrupt_parquet_pages_are_a_clear_error(image_dir: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    source = image_dir / "mmmu.parquet"
    rows = [{"id": f"validation_Art_{i}", "question": "Which <image 1>?",
             "options": "['a', 'b']", "answer": "A", "question_type": "multiple-choice",
             "image_1": {"bytes": png_bytes(i), "path": None}} for i in range(64)]
    pq.write_table(pa.Table.from_pylist(rows), source, row_group_size=8, compression="snappy")
    data = bytearray(source.read_bytes())
    data[4:len(data) // 2] = bytes(len(data) // 2 - 4)  # page headers zeroed, footer intact
    source.write_bytes(bytes(data))
    code, err = run(["eval", "convert", "mmmu", str(source), "--out", str(image_dir / "o")],
                    capsys)
    assert code == 2 and str(source) in one_error(err)
    assert not (image_dir / "o").exists()


# 10. console markup --------------------------------------------------------------------------


def test_markup_in_names_is_printed_as_text_and_compare_reads_the_result(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    eval_set = hf.write_eval_set(tmp_path / "evalset")
    folder = hf.lmms_run_07(tmp_path / "lmms", {101: "Answer: B", 102: "A"})
    results_file = next(folder.glob("*_results.json"))
    results = json.loads(results_file.read_text())
    results["config"]["model"] = "[bold red]m[/][/]"
    results_file.write_text(json.dumps(results))
    out = tmp_path / "results"
    code, _ = run(["eval", "import", "lmms-eval", str(folder), "--data", str(eval_set),
                   "--name", "student[/]", "--out", str(out)], capsys)
    assert code == 0
    code = main(["compare", str(out)])
    printed = capsys.readouterr()
    assert code == 0 and "student[/]" in printed.out and "Traceback" not in printed.err


# 11. smaller ones ----------------------------------------------------------------------------


@pytest.mark.parametrize("results", ['{"results": 5, "configs": [1, 2]}',
                                     '{"configs": {"mmstar": {"metric_list": 7}}}', "[]"])
def test_a_results_file_of_unexpected_shape(tmp_path: Path, results: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    eval_set = hf.write_eval_set(tmp_path / "evalset")
    folder = hf.lmms_run_07(tmp_path / "lmms", {101: "Answer: B"})
    results_file = next(folder.glob("*_results.json"))
    results_file.write_text(results)
    code, err = run(["eval", "import", "lmms-eval", str(folder), "--data", str(eval_set),
                     "--out", str(tmp_path / "out")], capsys)
    assert code == 0 or (code == 2 and results_file.name in one_error(err))
    if results.startswith("{\"results\": 5"):  # issue 34: imported silently before
        assert code == 2 and "field 'results': must be an object" in err


def test_a_folder_named_like_a_samples_file_is_not_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    eval_set = hf.write_eval_set(tmp_path / "evalset")
    folder = hf.lmms_run_07(tmp_path / "lmms", {101: "Answer: B"})
    (folder / "20260801_000000_samples_other.jsonl").mkdir()
    code, _ = run(["eval", "import", "lmms-eval", str(folder), "--data", str(eval_set),
                   "--out", str(tmp_path / "out")], capsys)
    assert code == 0


@pytest.mark.parametrize("size", ["0", "-3"])
def test_shard_size_must_be_positive(image_dir: Path, size: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    source = write_jsonl(image_dir / "items.jsonl", [{"id": "a", **ROW}])
    code = main(["ingest", "jsonl", str(source), "--out", str(image_dir / "out"),
                 "--shard-size", size])
    assert code == 2 and "--shard-size" in capsys.readouterr().err
    assert not (image_dir / "out").exists()


def test_an_oversized_image_file_is_refused_before_it_is_read(
        image_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import distill.core.images as images

    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 64)
    read = []
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self) or b"")
    source = write_jsonl(image_dir / "items.jsonl", [{"id": "a", **ROW}])
    code, err = run(["ingest", "jsonl", str(source), "--out", str(image_dir / "out")], capsys)
    assert code == 2 and "over the limit of 64" in one_error(err)
    assert not [path for path in read if path.suffix == ".png"]
