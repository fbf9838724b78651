"""`distill filter` and `distill datasets` end to end, on real digits samples and traces in
generate's layout: versions, policies, diff, decontamination, parents, export, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from filter_fixtures import (
    build_generate_dir,
    digits_of,
    faulty_teachers,
    good_text,
    sample_index,
)

from distill.cli import main
from distill.core.images import read_image_bytes
from distill.core.shards import iter_records, read_json_model
from distill.filter.signals import SIGNALS
from distill.filter.store import DatasetStore, verify_version
from distill.schemas import DatasetManifest, Sample, ScoredTrace, StageManifest, file_sha256
from testing.filter_data import make_trace, write_generate_dir

STRICT = Path(__file__).resolve().parents[1] / "data" / "policies" / "strict.yaml"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(ingest folder, generate folder): 36 train + 20 test digits items, 4 traces each."""
    root = tmp_path_factory.mktemp("pipeline")
    return build_generate_dir(root, {"train": 36, "test": 20}, faulty_teachers(), shard_size=6)


def cli(capsys: pytest.CaptureFixture, *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_filter(capsys, gen: Path, store: Path, *extra: str | Path) -> str:
    code, out, err = cli(capsys, "filter", "--traces", gen, "--store", store, *extra)
    assert code == 0, err
    return out.strip().splitlines()[-1]


def test_the_same_input_gives_the_same_version_id(inputs, tmp_path: Path, capsys) -> None:
    _, gen = inputs
    first = run_filter(capsys, gen, tmp_path / "store", "--report", tmp_path / "report")
    assert first[:16] in (tmp_path / "report" / "report.md").read_text()
    code, out, err = cli(capsys, "filter", "--traces", gen, "--store", tmp_path / "store")
    assert out.strip() == first and "already published" in err and "reused 10" in err
    assert run_filter(capsys, gen, tmp_path / "other-store") == first  # scored afresh
    store = DatasetStore(tmp_path / "store")
    assert [m.version for m in store.list_versions()] == [first]
    assert verify_version(store, first) == []


def test_a_version_holds_what_the_policy_keeps_and_why_the_rest_went(inputs, tmp_path,
                                                                     capsys) -> None:
    ingest, gen = inputs
    store = DatasetStore(tmp_path / "store")
    version = run_filter(capsys, gen, store.root)
    manifest = store.manifest(version)
    folder = store.version_dir(version)
    kept = [r for ref in manifest.shards for r in iter_records(folder / ref.name, ScoredTrace)]
    scored = [r for ref in manifest.scored_shards
              for r in iter_records(folder / ref.name, ScoredTrace)]
    assert len(scored) == manifest.counts["input_traces"] == 56 * 4
    assert {r.trace.trace_key for r in kept} == {r.trace.trace_key for r in scored
                                                 if r.verdict == "keep"}
    always = {name for name, signal in SIGNALS.items() if signal.always}
    # Dropped ones keep their signals; only a signal without a value may be absent.
    assert all(always <= set(r.signals) <= set(SIGNALS) for r in scored)
    assert all(r.verdict == "keep" and not r.reasons and r.sample.split == "train"
               for r in kept)
    by_fault: dict[str, list[str]] = {}
    for record in scored:
        if record.trace.teacher_id == "beta" and record.trace.k == 1 \
                and record.sample.split == "train":
            by_fault.setdefault(str(sample_index(record.sample) % 6), []).extend(record.reasons)
    assert "rule:correctness" in by_fault["0"]
    assert "rule:truncated" in by_fault["1"]
    assert "rule:has_loop" in by_fault["2"]
    assert "rule:refusal" in by_fault["3"]
    assert "rule:tags_balanced" in by_fault["4"]
    # alpha's two samples and beta's first are correct: dedup and the cap pick among them
    assert manifest.counts["keep"] == len(kept) > 36
    assert all(r.signals["correctness"] == "correct" for r in kept)
    assert manifest.drop_reasons["split"] == 20 * 4
    assert sum(manifest.drop_reasons.values()) == manifest.counts["drop"]
    report = (folder / "report" / "report.md").read_text()
    assert "Why traces were dropped" in report and "`rule:has_loop`" in report
    # The judge's reasons: the wrong answers, and the traces cut at the token limit.
    assert "by the judge's reason" in report and "`unparseable/truncated`" in report
    assert "`wrong/" in report
    for plot in ("lengths.png", "drop_reasons.png", "teachers.png"):
        assert (folder / "report" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_version_is_self_contained(inputs, tmp_path: Path, capsys) -> None:
    ingest, gen = inputs
    moved_ingest = tmp_path / "ingest"
    shutil.copytree(ingest, moved_ingest)
    moved_gen = write_generate_dir(tmp_path / "gen", moved_ingest, faulty_teachers())
    store = DatasetStore(tmp_path / "store")
    version = run_filter(capsys, moved_gen, store.root)
    shutil.rmtree(moved_ingest)
    shutil.rmtree(moved_gen)  # the inputs are gone; the version still has everything
    manifest = store.manifest(version)
    root = store.version_dir(version) / manifest.image_root
    for ref in manifest.shards:
        for record in iter_records(store.version_dir(version) / ref.name, ScoredTrace):
            assert read_image_bytes(record.sample.image, root)  # checks the sha256
    assert verify_version(store, version) == []
    code, out, _ = cli(capsys, "datasets", "--store", store.root, "verify", version[:10])
    assert code == 0 and out.startswith("ok ")
    shard = store.version_dir(version) / manifest.shards[0].name
    shard.chmod(0o644)
    with open(shard, "a", encoding="utf-8") as handle:
        handle.write("\n")
    code, _, err = cli(capsys, "datasets", "--store", store.root, "verify", version)
    assert code == 2 and "sha256 differs" in err


def test_a_new_policy_reuses_the_scores_and_diff_says_why(inputs, tmp_path, capsys) -> None:
    _, gen = inputs
    store = tmp_path / "store"
    default = run_filter(capsys, gen, store)
    code, out, err = cli(capsys, "filter", "--traces", gen, "--store", store, "--policy", STRICT)
    assert code == 0 and "scored 0, reused 10" in err
    strict = out.strip()
    assert strict != default
    code, out, _ = cli(capsys, "datasets", "--store", store, "diff", default[:8], strict[:8],
                       "--json")
    diff = json.loads(out)
    changed = {c["key"] for c in diff["policy_changes"]}
    assert {"rules.has_answer_line.equals", "per_item.max_traces", "name"} <= changed
    assert diff["kept"]["a"] - diff["removed_total"] + diff["added_total"] == diff["kept"]["b"]
    assert diff["removed"]["rule:has_answer_line"] > 0  # beta's "so the answer is" traces
    # Each removal reason is B's recorded verdict on that trace.
    b_scored = {}
    folder = DatasetStore(store).version_dir(strict)
    for ref in DatasetStore(store).manifest(strict).scored_shards:
        for record in iter_records(folder / ref.name, ScoredTrace):
            b_scored[record.trace.trace_key] = record
    for label, examples in diff["examples"].items():
        if label.startswith("removed: "):
            for example in examples:
                assert b_scored[example["trace_key"]].reasons[0] == label.removeprefix("removed: ")
    code, text, _ = cli(capsys, "datasets", "--store", store, "diff", default, strict)
    assert "rule:has_answer_line" in text and "per_item.max_traces: 4 -> 2" in text


def test_decontamination_drops_eval_items_by_image_question_and_near_question(
        tmp_path: Path, capsys) -> None:
    from conftest import png_bytes, write_jsonl

    images = tmp_path / "images"
    images.mkdir()
    questions = [
        "How many of the striped tiles along the top border of the mosaic are blue?",
        "Which animal in the second panel of the comic strip is holding an umbrella?",
        "What number is written on the jersey of the player nearest to the goal post?",
        "How many windows on the red building on the left have their curtains open?",
    ]
    rows = []
    for i, question in enumerate(questions):
        (images / f"{i}.png").write_bytes(png_bytes(100 + i))
        rows.append({"id": f"item-{i}", "image": f"{i}.png", "question": question,
                     "answer": str(i + 2), "answer_type": "number", "category": "misc"})
    write_jsonl(images / "items.jsonl", rows)
    assert main(["ingest", "jsonl", str(images / "items.jsonl"), "--out",
                 str(tmp_path / "ingest")]) == 0
    gen = write_generate_dir(tmp_path / "gen", tmp_path / "ingest", lambda s: [
        make_trace(s, "t", 0, f"Looking closely at the picture I count carefully.\n"
                              f"Answer: {s.answer}")])
    (images / "eval-other.png").write_bytes(png_bytes(999))
    eval_rows = [
        {"id": "e0", "image": "0.png", "question": "What colour is the sky?", "answer": "1",
         "answer_type": "number", "category": "misc"},  # same image as item-0
        {"id": "e1", "image": "eval-other.png", "question": questions[1], "answer": "1",
         "answer_type": "number", "category": "misc"},  # same question as item-1
        {"id": "e2", "image": "eval-other.png", "answer": "1", "answer_type": "number",
         "question": questions[2].replace("written", "printed"), "category": "misc"},
    ]
    write_jsonl(images / "eval.jsonl", eval_rows)
    assert main(["ingest", "jsonl", str(images / "eval.jsonl"), "--out",
                 str(tmp_path / "eval")]) == 0
    store = DatasetStore(tmp_path / "store")
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: {correctness: correct}\ndecontamination: {near_threshold: 0.5}\n")
    version = run_filter(capsys, gen, store.root, "--eval-set", f"{tmp_path / 'eval'}:train",
                         "--policy", policy)
    manifest = store.manifest(version)
    folder = store.version_dir(version)
    verdicts = {r.sample.id: (r.signals["contamination"], r.reasons)
                for ref in manifest.scored_shards
                for r in iter_records(folder / ref.name, ScoredTrace)}
    assert verdicts["item-0"] == ("image", ["contaminated:image"])
    assert verdicts["item-1"] == ("question", ["contaminated:question"])
    assert verdicts["item-2"] == ("question_near", ["contaminated:question_near"])
    assert verdicts["item-3"] == ("none", [])
    assert manifest.eval_sets and manifest.eval_sets[0].split()[1] == (
        f"{(tmp_path / 'eval').resolve()}:train")
    without = run_filter(capsys, gen, store.root, "--policy", policy)
    assert without != version and store.manifest(without).counts["keep"] == 4


def test_a_child_version_dedups_against_its_parent(inputs, tmp_path: Path, capsys) -> None:
    ingest, gen = inputs
    store = DatasetStore(tmp_path / "store")
    parent = run_filter(capsys, gen, store.root)

    def more(sample: Sample) -> list:
        digits = " then ".join(str(d) for d in digits_of(sample))
        fresh = (f"Step 1: read the grid cell by cell: {digits}. Step 2: apply what "
                 f"'{sample.question}' asks for. Step 3: check the result once more.\n"
                 f"Answer: {sample.answer}")
        return [make_trace(sample, "gamma", 0, good_text(sample, 0).upper()),  # dup of alpha
                make_trace(sample, "gamma", 1, fresh)]

    gen2 = write_generate_dir(tmp_path / "gen2", ingest, more)
    child = run_filter(capsys, gen2, store.root, "--parent", "latest")
    manifest = store.manifest(child)
    assert manifest.parent == parent
    parent_manifest = store.manifest(parent)
    assert manifest.counts["kept_parent"] == parent_manifest.counts["kept"]
    assert manifest.shards[: len(parent_manifest.shards)] == [
        ref.model_copy(update={"name": f"data/part-{i:05d}.jsonl"})
        for i, ref in enumerate(parent_manifest.shards)]
    clusters = [json.loads(line) for line in
                (store.version_dir(child) / "dedup" / "clusters.jsonl").read_text().splitlines()]
    gamma = [(c["kind"], c["of_parent_version"]) for c in clusters if c["teacher_id"] == "gamma"]
    assert gamma == [("exact", True)] * 36  # every upper-cased copy, no fresh trace
    code, out, _ = cli(capsys, "datasets", "--store", store.root, "diff", parent, child,
                       "--json")
    diff = json.loads(out)
    assert diff["removed"] == {} and diff["added_total"] == manifest.counts["keep"]
    assert diff["added"] == {"not in A's input": manifest.counts["keep"]}
    code, out, _ = cli(capsys, "datasets", "--store", store.root, "show", child)
    assert f"{child[:12]} <- {parent[:12]}" in out
    code, out, _ = cli(capsys, "datasets", "--store", store.root, "list", "--json")
    assert [v["version"] for v in json.loads(out)] == [parent, child]


def test_malformed_trace_lines_fail_with_file_line_and_field(inputs, tmp_path: Path,
                                                             capsys) -> None:
    ingest, _ = inputs
    bad_gen = write_generate_dir(tmp_path / "gen", ingest, faulty_teachers())
    shard = bad_gen / "traces" / "train" / "part-00001.jsonl"
    lines = shard.read_text().splitlines()
    broken = json.loads(lines[2])
    del broken["finish_reason"]
    lines[2] = json.dumps(broken)
    lines[5] = lines[5][:50]
    shard.write_text("\n".join(lines) + "\n")
    code, _, err = cli(capsys, "filter", "--traces", bad_gen, "--store", tmp_path / "store")
    assert code == 2 and "changed since generate wrote it" in err  # hashes are checked
    manifest = read_json_model(bad_gen / "manifest.json", StageManifest)
    refs = [r.model_copy(update={"sha256": file_sha256(bad_gen / r.name)})
            for r in manifest.shards]
    (bad_gen / "manifest.json").write_text(manifest.model_copy(update={"shards": refs})
                                           .model_dump_json())
    code, _, err = cli(capsys, "filter", "--traces", bad_gen, "--store", tmp_path / "store")
    assert code == 2
    assert f"{shard}:3: field 'finish_reason': required field is missing" in err
    code, out, err = cli(capsys, "filter", "--traces", bad_gen, "--store", tmp_path / "store",
                         "--on-error", "skip")
    assert code == 0
    version = out.strip()
    store = DatasetStore(tmp_path / "store")
    assert store.manifest(version).counts["rejected"] == 2
    rejects = (store.version_dir(version) / "rejects.jsonl").read_text().splitlines()
    assert [json.loads(r)["location"] for r in rejects] == [f"{shard}:3", f"{shard}:6"]
    # The same cache entry, now under --on-error fail: still an error, not silence.
    code, _, err = cli(capsys, "filter", "--traces", bad_gen, "--store", tmp_path / "store")
    assert code == 2 and f"{shard}:3" in err


def test_missing_and_wrong_inputs_are_clear_errors(inputs, tmp_path: Path, capsys) -> None:
    ingest, gen = inputs
    code, _, err = cli(capsys, "filter", "--traces", tmp_path, "--store", tmp_path / "s")
    assert code == 2 and "not a finished generate folder" in err
    code, _, err = cli(capsys, "filter", "--traces", ingest, "--store", tmp_path / "s")
    assert code == 2 and "'ingest' folder" in err
    code, _, err = cli(capsys, "filter", "--traces", gen, "--store", tmp_path / "s",
                       "--parent", "latest")
    assert code == 2 and "no dataset versions yet" in err


def test_export_jsonl_parquet_and_hf(inputs, tmp_path: Path, capsys) -> None:
    import datasets
    import pyarrow.parquet as pq

    _, gen = inputs
    store = tmp_path / "store"
    version = run_filter(capsys, gen, store)
    kept = DatasetStore(store).manifest(version).counts["kept"]
    for fmt, out in (("jsonl", tmp_path / "x.jsonl"), ("parquet", tmp_path / "x.parquet"),
                     ("hf", tmp_path / "x_hf")):
        code, _, err = cli(capsys, "datasets", "--store", store, "export", "latest",
                           "--format", fmt, "--out", out)
        assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert len(rows) == kept and Path(rows[0]["image_path"]).is_file()
    assert rows[0]["signals"]["correctness"] == "correct"
    table = pq.read_table(tmp_path / "x.parquet")
    assert table.num_rows == kept
    assert table.column("signals").combine_chunks().field("tags_balanced").to_pylist() \
        == [True] * kept
    dataset = datasets.load_from_disk(str(tmp_path / "x_hf"))
    assert len(dataset) == kept and dataset[0]["image"].size == (32, 32)
    code, _, err = cli(capsys, "datasets", "--store", store, "export", version, "--format",
                       "jsonl", "--out", tmp_path / "x.jsonl")
    assert code == 2 and "already exists" in err


def test_generate_rejections_are_counted(tmp_path: Path, capsys) -> None:
    from distill.schemas import Rejection

    def with_rejects(sample: Sample) -> list:
        return [make_trace(sample, "t", 0, good_text(sample)),
                Rejection(stage="generate", key=f"{sample.id}:t:1", reason="unparseable",
                          message="no final answer", sample_id=sample.id)]

    _, gen = build_generate_dir(tmp_path, {"train": 6}, with_rejects, shard_size=3)
    store = DatasetStore(tmp_path / "store")
    version = run_filter(capsys, gen, store.root)
    assert store.manifest(version).counts["generate_rejects"] == 6
    assert "rejected earlier by generate | 6" in (
        store.version_dir(version) / "report" / "report.md").read_text()


def test_signals_command_lists_the_vocabulary(capsys) -> None:
    code, out, _ = cli(capsys, "datasets", "signals")
    assert code == 0 and all(f"`{name}`" in out for name in SIGNALS)


def test_manifest_is_a_valid_dataset_manifest(inputs, tmp_path: Path, capsys) -> None:
    _, gen = inputs
    store = DatasetStore(tmp_path / "store")
    version = run_filter(capsys, gen, store.root)
    manifest = read_json_model(store.version_dir(version) / "manifest.json", DatasetManifest)
    assert manifest.image_root == "../../images"
    assert manifest.teachers == ["alpha", "beta"]
    assert set(manifest.scorer_versions) >= {"correctness", "format", "repetition", "refusal",
                                             "garbage", "length", "agreement", "minhash",
                                             "dedup", "decontamination"}
    assert manifest.counts["correctness:correct"] + manifest.counts["correctness:wrong"] + \
        manifest.counts.get("correctness:unparseable", 0) == manifest.counts["input_traces"]


def test_teacher_preference_decides_which_copy_and_which_traces_stay(inputs, tmp_path,
                                                                   capsys) -> None:
    """beta's first sample differs from alpha's only in its opening words: with beta
    preferred it is the copy dedup keeps, and the cap of one keeps nothing else."""
    _, gen = inputs
    policy = tmp_path / "prefer-beta.yaml"
    policy.write_text("rules: {correctness: correct, truncated: false}\n"
                      "per_item: {max_traces: 1, teacher_preference: [beta, alpha]}\n")
    store = DatasetStore(tmp_path / "store")
    version = run_filter(capsys, gen, store.root, "--policy", policy)
    kept = [r for ref in store.manifest(version).shards
            for r in iter_records(store.version_dir(version) / ref.name, ScoredTrace)]
    assert len(kept) == 36 and len({r.sample.id for r in kept}) == 36
    assert {(r.trace.teacher_id, r.trace.k) for r in kept} == {("beta", 0)}
