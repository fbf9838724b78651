"""The embedded default set: deterministic, multi-step, and leak-free across splits."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from distill.cli import main
from distill.core.digits import GRID, QUESTIONS, SCALE, digit_images, gold_answer, source_pools
from distill.core.shards import iter_records, read_json_model
from distill.ingest.sources.digits import DigitsConfig, iter_digits
from distill.schemas import Sample, StageManifest

SMALL = DigitsConfig(seed=3, counts={"train": 300, "val": 40, "test": 120})


def test_pools_are_disjoint_and_cover_every_label() -> None:
    pools = source_pools(0)
    train, val, test = (set(pools[s].tolist()) for s in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(train | val | test) == 1797
    for split in ("train", "val", "test"):
        _, labels = digit_images(pools[split])
        assert set(labels.tolist()) == set(range(10))


def test_no_test_item_uses_a_training_scan() -> None:
    pools = source_pools(SMALL.seed)
    used: dict[str, set[int]] = {"train": set(), "val": set(), "test": set()}
    for item in iter_digits(SMALL):
        used[item.fields["split"]].update(item.fields["meta"]["source_indices"])
    assert used["test"] <= set(pools["test"].tolist())
    assert used["val"] <= set(pools["val"].tolist())
    assert not used["test"] & used["train"] and not used["val"] & used["train"]


def test_items_are_deterministic_and_independent_of_split_sizes() -> None:
    first = [(i.fields, i.image_bytes) for i in iter_digits(SMALL)]
    again = [(i.fields, i.image_bytes) for i in iter_digits(SMALL)]
    assert first == again
    bigger = DigitsConfig(seed=3, counts={"train": 310, "val": 40, "test": 120})
    assert [(i.fields, i.image_bytes) for i in iter_digits(bigger)][:300] == first[:300]


def test_images_show_the_digits_the_gold_answer_is_computed_from() -> None:
    for item in list(iter_digits(SMALL))[:50]:
        meta = item.fields["meta"]
        scans, labels = digit_images(np.array(meta["source_indices"]))
        pixels = np.asarray(Image.open(io.BytesIO(item.image_bytes)))
        assert pixels.shape == (GRID * 8 * SCALE,) * 2
        for cell, scan in zip(meta["cells"], scans, strict=True):
            row, col = divmod(cell, GRID)
            crop = pixels[row * 16:(row + 1) * 16:SCALE, col * 16:(col + 1) * 16:SCALE]
            np.testing.assert_allclose(255 - crop.astype(float), scan * 255 / 16, atol=0.51)
        category = item.fields["category"]
        assert item.fields["answer"] == gold_answer(category, labels.tolist())
        assert item.fields["question"] == QUESTIONS[category][0]
        assert 2 <= len(meta["cells"]) <= 4


def test_gold_answers_need_several_steps() -> None:
    assert gold_answer("sum", [3, 7, 5]) == "15"
    assert gold_answer("max_minus_min", [3, 7, 5]) == "4"
    assert gold_answer("count_even", [2, 7, 4, 0]) == "3"
    assert gold_answer("sum_is_even", [3, 7, 5]) == "no"


def test_cli_ingests_the_default_with_a_summary(tmp_path: Path, capsys) -> None:
    out = tmp_path / "digits"
    assert main(["ingest", "digits", "--out", str(out), "--counts",
                 "train=60,val=10,test=30", "--shard-size", "25"]) == 0
    printed = capsys.readouterr().err
    assert "ingested 100 samples" in printed and "sum_is_even" in printed
    manifest = read_json_model(out / "manifest.json", StageManifest)
    samples = [s for ref in manifest.shards for s in iter_records(out / ref.name, Sample)]
    assert len(samples) == 100 and len({s.image.sha256 for s in samples}) == 100
    assert {s.split for s in samples} == {"train", "val", "test"}
    assert sum(ref.rows for ref in manifest.shards) == 100
