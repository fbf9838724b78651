"""`distill datasets export --format trl|llamafactory|swift`: a distilled version as chat
conversations, read back by the trainers' own loaders (TRL's SFTTrainer and collator on a
tiny randomly initialised VLM; `datasets.load_from_disk`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from filter_fixtures import build_generate_dir, scripted_teachers

from distill.cli import main
from distill.core.prompts import load_prompt, target_text
from distill.core.shards import iter_records
from distill.filter.store import DatasetStore
from distill.schemas import ScoredTrace
from tests.helpers.tiny_vlm import build_tiny_vlm


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory) -> tuple[DatasetStore, str]:
    """A dataset version of 8 digits items with 4 good traces each."""
    root = tmp_path_factory.mktemp("conversations")
    _, gen = build_generate_dir(root, {"train": 8}, scripted_teachers(), shard_size=4)
    store = root / "store"
    assert main(["filter", "--traces", str(gen), "--store", str(store)]) == 0
    dataset_store = DatasetStore(store)
    return dataset_store, dataset_store.list_versions()[-1].version


def _export(store: DatasetStore, fmt: str, target: str, out: Path) -> None:
    code = main(["datasets", "--store", str(store.root), "export", "latest", "--format", fmt,
                 "--target", target, "--out", str(out)])
    assert code == 0


def _kept(store: DatasetStore, version: str) -> list[ScoredTrace]:
    folder = store.version_dir(version)
    return [r for ref in store.manifest(version).shards
            for r in iter_records(folder / ref.name, ScoredTrace) if r.verdict == "keep"]


def test_trl_layout_loads_from_disk_with_images_inside(version, tmp_path: Path) -> None:
    import datasets

    store, name = version
    kept = _kept(store, name)
    _export(store, "trl", "cot", tmp_path / "trl")
    dataset = datasets.load_from_disk(str(tmp_path / "trl"))
    assert len(dataset) == len(kept) > 0
    by_key = {r.trace.trace_key: r for r in kept}
    row = dataset[0]
    record = by_key[row["id"]]
    system, user = load_prompt("cot").render(record.sample)
    roles = [m["role"] for m in row["messages"]]
    assert roles == (["system", "user", "assistant"] if system else ["user", "assistant"])
    user_parts = row["messages"][roles.index("user")]["content"]
    assert user_parts[0]["type"] == "image" and user_parts[1]["text"] == user
    assistant = row["messages"][-1]["content"][0]["text"]
    assert assistant == target_text("cot", record.trace.final_answer, record.trace.reasoning)
    assert assistant.endswith(f"Answer: {record.trace.final_answer}")
    assert len(row["images"]) == 1 and row["images"][0].size == (32, 32)  # decoded PIL


def test_llamafactory_and_swift_layouts_name_images_inside_the_folder(version,
                                                                      tmp_path: Path) -> None:
    store, name = version
    kept = _kept(store, name)
    _export(store, "llamafactory", "direct", tmp_path / "lf")
    _export(store, "swift", "direct", tmp_path / "swift")
    info = json.loads((tmp_path / "lf" / "dataset_info.json").read_text())
    (entry,) = info.values()
    assert entry["formatting"] == "sharegpt" and entry["file_name"] == "data.json"
    lf_rows = json.loads((tmp_path / "lf" / "data.json").read_text())
    swift_rows = [json.loads(line)
                  for line in (tmp_path / "swift" / "data.jsonl").read_text().splitlines()]
    assert len(lf_rows) == len(swift_rows) == len(kept)
    labels = {r.trace.trace_key: r.label for r in kept}
    for folder, rows in ((tmp_path / "lf", lf_rows), (tmp_path / "swift", swift_rows)):
        for row in rows:
            user = next(m for m in row["messages"] if m["role"] == "user")["content"]
            # One <image> placeholder per image, as both trainers count them.
            assert user.count("<image>") == len(row["images"]) == 1
            assert (folder / row["images"][0]).is_file()
            assert not Path(row["images"][0]).is_absolute()
            assert row["messages"][-1] == {"role": "assistant",
                                           "content": f"Answer: {labels[row['id']]}"}
    # Items share images across their traces: each distinct image is written once.
    images = list((tmp_path / "swift" / "images").iterdir())
    assert len(images) == len({r.sample.image.sha256 for r in kept})


def test_an_export_never_overwrites(version, tmp_path: Path, capsys) -> None:
    store, _ = version
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep me")
    code = main(["datasets", "--store", str(store.root), "export", "latest", "--format",
                 "swift", "--out", str(tmp_path / "taken")])
    assert code == 2 and "already exists" in capsys.readouterr().err
    assert (tmp_path / "taken" / "mine.txt").read_text() == "keep me"


def test_one_trl_sft_step_on_the_export(version, tmp_path: Path) -> None:
    """TRL's own SFTTrainer and vision collator train a tiny random Idefics3 one step on
    the exported folder: the layout is what TRL reads, images included."""
    import datasets
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    store, _ = version
    _export(store, "trl", "cot", tmp_path / "trl")
    dataset = datasets.load_from_disk(str(tmp_path / "trl")).select(range(4))
    model_dir = build_tiny_vlm(tmp_path / "vlm")
    processor = AutoProcessor.from_pretrained(str(model_dir))
    model = AutoModelForImageTextToText.from_pretrained(str(model_dir), dtype=torch.float32)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    config = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=1,
                       per_device_train_batch_size=2, learning_rate=1e-2, report_to=[],
                       use_cpu=True, save_strategy="no", logging_steps=1,
                       dataloader_num_workers=0, max_length=None)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset,
                         processing_class=processor)
    result = trainer.train()
    assert result.global_step == 1 and torch.isfinite(torch.tensor(result.training_loss))
    changed = [n for n, p in model.named_parameters() if p.requires_grad
               and not torch.equal(p.detach(), before[n])]
    assert changed  # the step really updated the model
