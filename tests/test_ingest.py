"""Ingestion: JSONL, local `datasets` folders and easy-vqa into Sample shards; every bad
row gets a clear error (file, line, field) and a failed run leaves nothing behind."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from distill.cli import main
from distill.core.errors import InputError
from distill.core.shards import iter_records, read_json_model
from distill.ingest.pipeline import IngestOptions, ingest, open_source
from distill.schemas import Rejection, Sample, StageManifest, file_sha256, sha256_hex
from tests.conftest import png_bytes, write_jsonl


def good_row(i: int, image: str = "a.png", **extra) -> dict:
    return {"id": f"item-{i}", "image": image, "question": f"How many shapes? ({i})",
            "answer": i, "category": "count", **extra}


def run_ingest(source: str, path: Path | None, out: Path, **kwargs) -> StageManifest:
    rows, total = open_source(source, path, **{k: v for k, v in kwargs.items()
                                               if k in ("image_root", "columns", "limit")})
    options = IngestOptions(out=out, **{k: v for k, v in kwargs.items()
                                        if k in ("shard_size", "images", "on_error")})
    return ingest(rows, options, total=total).manifest


def samples_in(out: Path) -> list[Sample]:
    manifest = read_json_model(out / "manifest.json", StageManifest)
    return [s for ref in manifest.shards for s in iter_records(out / ref.name, Sample)]


def test_jsonl_ingestion_copies_images_and_shards_by_split(image_dir: Path, tmp_path: Path):
    rows = [good_row(i, image=["a.png", "b.png", "c.png"][i % 3],
                     split="test" if i >= 5 else "train") for i in range(7)]
    rows[0] |= {"choices": ["two", "three"], "answer": "B", "answer_type": "choice"}
    source = write_jsonl(image_dir / "items.jsonl", rows)
    out = tmp_path / "out"
    manifest = run_ingest("jsonl", source, out, shard_size=2)
    assert [ref.name for ref in manifest.shards] == [
        "samples/test/part-00000.jsonl", "samples/train/part-00000.jsonl",
        "samples/train/part-00001.jsonl", "samples/train/part-00002.jsonl"]
    for ref in manifest.shards:
        assert file_sha256(out / ref.name) == ref.sha256
    samples = samples_in(out)
    assert sorted(s.id for s in samples) == [f"item-{i}" for i in range(7)]
    by_id = {s.id: s for s in samples}
    assert by_id["item-0"].answer_type == "choice" and by_id["item-1"].answer == "1"
    assert by_id["item-1"].answer_type == "number" and by_id["item-6"].split == "test"
    copied = out / by_id["item-1"].image.path
    assert copied.read_bytes() == (image_dir / "b.png").read_bytes()
    assert by_id["item-1"].image.sha256 == sha256_hex(copied.read_bytes())
    assert manifest.counts["samples"] == 7 and manifest.counts["test/count"] == 2


def test_reference_and_inline_image_modes(image_dir: Path, tmp_path: Path) -> None:
    source = write_jsonl(image_dir / "items.jsonl", [good_row(1)])
    manifest = run_ingest("jsonl", source, tmp_path / "ref", images="reference")
    # relative to the ingest folder, so a project moved as a whole still finds them
    assert (tmp_path / "ref" / manifest.image_root).resolve() == image_dir.resolve()
    assert not Path(manifest.image_root).is_absolute()
    assert samples_in(tmp_path / "ref")[0].image.path == "a.png"
    run_ingest("jsonl", source, tmp_path / "inline", images="inline")
    inline = samples_in(tmp_path / "inline")[0].image
    assert inline.inline_bytes() == (image_dir / "a.png").read_bytes()
    row = {k: v for k, v in good_row(2).items() if k != "image"}
    b64 = write_jsonl(tmp_path / "b64.jsonl",
                      [row | {"image_b64": base64.b64encode(png_bytes(5)).decode()}])
    run_ingest("jsonl", b64, tmp_path / "b64")
    assert samples_in(tmp_path / "b64")[0].image.sha256 == sha256_hex(png_bytes(5))


BAD_ROWS = {
    "missing field": ({"id": "x", "image": "a.png", "answer": "1"}, "question",
                      "required field is missing"),
    "wrong type": ({**good_row(1), "question": 42}, "question", "valid string"),
    "unknown field": ({**good_row(1), "qestion": "typo"}, "qestion", "unknown field"),
    "empty question": ({**good_row(1), "question": "  "}, "question", "blank"),
    "missing image": ({**good_row(1), "image": "missing.png"}, "image", "not found"),
    "unreadable image": ({**good_row(1), "image": "notes.png"}, "image", "not a readable image"),
    "truncated image": ({**good_row(1), "image": "cut.png"}, "image", "corrupt or truncated"),
    "path escape": ({**good_row(1), "image": "../secret.png"}, "image", "escapes"),
    "absolute path": ({**good_row(1), "image": "/etc/hostname"}, "image", "absolute"),
    "bad JSON": ('{"id": "x", "image": "a.png", "question": ', None, "not valid JSON"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS), ids=list(BAD_ROWS))
def test_each_bad_row_fails_with_file_line_field_and_writes_nothing(
        case: str, image_dir: Path, tmp_path: Path) -> None:
    bad, field, message = BAD_ROWS[case]
    (image_dir / "notes.png").write_text("just some text")
    (image_dir / "cut.png").write_bytes(png_bytes(4, (64, 64))[:150])
    (tmp_path / "secret.png").write_bytes(png_bytes(8))
    source = write_jsonl(image_dir / "items.jsonl", [good_row(0), good_row(1), bad])
    out = tmp_path / "out"
    with pytest.raises(InputError) as info:
        run_ingest("jsonl", source, out)
    error = info.value
    assert (error.file, error.line) == (str(source), 3)
    assert error.field == field and message in str(error)
    assert not out.exists(), "a failed ingestion must leave nothing that looks finished"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_skip_mode_sends_bad_rows_to_the_rejects_file(image_dir: Path, tmp_path: Path) -> None:
    (image_dir / "notes.png").write_text("text")
    rows = [good_row(0), BAD_ROWS["wrong type"][0], "not json", good_row(3),
            {**good_row(4), "image": "notes.png"}, good_row(0)]
    source = write_jsonl(image_dir / "items.jsonl", rows)
    out = tmp_path / "out"
    manifest = run_ingest("jsonl", source, out, on_error="skip")
    assert [s.id for s in samples_in(out)] == ["item-0", "item-3"]
    rejects = list(iter_records(out / "rejects.jsonl", Rejection))
    assert [(r.location, r.reason) for r in rejects] == [
        (f"{source}:2", "schema_error"), (f"{source}:3", "bad_json"),
        (f"{source}:5", "unreadable_image"), (f"{source}:6", "duplicate_id")]
    assert manifest.counts["rejected"] == 4 and manifest.rejects[0].rows == 4


def test_cli_exit_code_and_message_for_bad_input(image_dir: Path, tmp_path: Path, capsys):
    source = write_jsonl(image_dir / "items.jsonl", [good_row(0), {**good_row(1), "answer": []}])
    code = main(["ingest", "jsonl", str(source), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{source}:2: field 'answer'" in err
    assert not (tmp_path / "o").exists()


def test_existing_output_is_not_clobbered(image_dir: Path, tmp_path: Path) -> None:
    source = write_jsonl(image_dir / "items.jsonl", [good_row(0)])
    out = tmp_path / "out"
    run_ingest("jsonl", source, out)
    assert main(["ingest", "jsonl", str(source), "--out", str(out)]) == 2
    assert main(["ingest", "jsonl", str(source), "--out", str(out), "--overwrite"]) == 0


def hf_dataset_dict(image_dir: Path):
    import datasets

    features = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                                  "answer": datasets.Value("string"),
                                  "category": datasets.Value("string")})
    rows = {"image": [str(image_dir / n) for n in ("a.png", "b.png")],
            "question": ["What color?", "Is it round?"], "answer": ["red", "yes"],
            "category": ["color", "shape"]}
    train = datasets.Dataset.from_dict(rows, features=features)
    return datasets.DatasetDict({"train": train, "test": train.select([1])})


def test_a_saved_datasets_dataset_keeps_original_image_bytes(image_dir: Path, tmp_path: Path):
    hf_dataset_dict(image_dir).save_to_disk(str(tmp_path / "saved"))
    run_ingest("hf", tmp_path / "saved", tmp_path / "out")
    samples = samples_in(tmp_path / "out")
    assert sorted((s.split, s.answer, s.answer_type) for s in samples) == [
        ("test", "yes", "yes_no"), ("train", "red", "text"), ("train", "yes", "yes_no")]
    red = next(s for s in samples if s.answer == "red")
    assert red.image.sha256 == sha256_hex((image_dir / "a.png").read_bytes())


def test_parquet_and_imagefolder_datasets(image_dir: Path, tmp_path: Path) -> None:
    parquet_dir = tmp_path / "pq"
    parquet_dir.mkdir()
    hf_dataset_dict(image_dir)["train"].to_parquet(str(parquet_dir / "distill.train.parquet"))
    run_ingest("hf", parquet_dir, tmp_path / "out_pq")
    assert len(samples_in(tmp_path / "out_pq")) == 2
    folder = tmp_path / "imagefolder"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes((image_dir / name).read_bytes())
    write_jsonl(folder / "metadata.jsonl", [
        {"file_name": "a.png", "query": "What color?", "label": "red"},
        {"file_name": "b.png", "query": "Is it round?", "label": "no"}])
    run_ingest("hf", folder, tmp_path / "out_if",
               columns={"question": "query", "answer": "label"})
    assert sorted(s.answer for s in samples_in(tmp_path / "out_if")) == ["no", "red"]


def test_easy_vqa_ingestion(tmp_path: Path) -> None:
    run_ingest("easy-vqa", None, tmp_path / "out", limit=30)
    samples = samples_in(tmp_path / "out")
    assert len(samples) == 60 and {s.split for s in samples} == {"train", "test"}
    assert {s.category for s in samples} <= {"presence", "shape", "color"}
    assert all(s.answer in ("yes", "no") for s in samples if s.answer_type == "yes_no")
    first = next(s for s in samples if s.id == "easyvqa-train-000000")
    assert first.question == "What is the blue shape?" and first.answer == "rectangle"
