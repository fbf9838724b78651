"""filter on the real output of `distill generate` with the built-in digit teachers (a kNN
and a logistic-regression reader that look at the pixels): ingest -> generate -> filter."""

from __future__ import annotations

from pathlib import Path

import pytest
from filter_fixtures import ingest_digits

from distill.cli import main
from distill.core.shards import iter_records, read_json_model
from distill.filter.store import DatasetStore, verify_version
from distill.schemas import ScoredTrace, StageManifest


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("generated")
    ingest = ingest_digits(root / "ingest", {"train": 48, "test": 16}, shard_size=16)
    assert main(["generate", "--samples", str(ingest), "--teachers", "digits",
                 "--out", str(root / "gen")]) == 0
    return ingest, root / "gen"


def test_filter_publishes_a_version_from_generated_traces(generated, tmp_path: Path,
                                                          capsys) -> None:
    ingest, gen = generated
    args = ["filter", "--traces", str(gen), "--store", str(tmp_path / "store"),
            "--eval-set", f"{ingest}:test"]
    assert main(args) == 0
    version = capsys.readouterr().out.strip()
    store = DatasetStore(tmp_path / "store")
    manifest = store.manifest(version)
    generate_manifest = read_json_model(gen / "manifest.json", StageManifest)
    assert manifest.inputs == sorted(generate_manifest.shards, key=lambda r: r.name)
    assert manifest.teachers == ["knn", "logreg"]
    assert manifest.counts["input_traces"] == generate_manifest.counts["traces"]
    assert manifest.counts["generate_rejects"] == generate_manifest.counts.get("rejected", 0)
    # Test items are both another split and an eval set item (by image).
    assert manifest.drop_reasons["split"] == sum(r.rows for r in manifest.inputs
                                                 if "/test/" in r.name)
    kept = [r for ref in manifest.shards
            for r in iter_records(store.version_dir(version) / ref.name, ScoredTrace)]
    assert kept and all(r.signals["correctness"] == "correct" for r in kept)
    assert all(r.sample.split == "train" for r in kept)
    # The readers make mistakes; the wrong ones were dropped for that reason.
    assert manifest.counts["correctness:wrong"] > 0
    assert manifest.drop_reasons.get("rule:correctness", 0) > 0
    report = (store.version_dir(version) / "report" / "report.md").read_text()
    assert "| knn |" in report and "| logreg |" in report
    assert verify_version(store, version) == []
    assert main(args) == 0  # the same command again: the same version
    assert capsys.readouterr().out.strip() == version
