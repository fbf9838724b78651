"""The training loop on real digits data and real tiny students (CPU)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distill.core.errors import DistillError, InputError
from distill.core.shards import read_json_model
from distill.schemas import RunManifest
from distill.train.config import load_config
from distill.train.data import load_training_set
from distill.train.loop import TrainingDivergedError, prepare_model, train
from distill.train.lora import apply_lora, load_adapter, merge_lora, save_adapter
from distill.train.metrics import read_metrics
from distill.train.runtime import Runtime
from distill.train.siqvl.build import load_student, save_student
from tests.train_support import config, make_dataset, make_ingest, micro_student

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train-data")
    ingest_dir = make_ingest(root / "ingest", train=48, test=8)
    return {"ingest": ingest_dir, "dataset": make_dataset(ingest_dir, root / "version"),
            "small": make_dataset(ingest_dir, root / "small", limit=8)}


def _cli_env() -> dict[str, str]:
    env = dict(os.environ, DISTILL_PROGRESS="0", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO))
    return env


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_a_tiny_student_overfits_a_few_samples(data, tmp_path):
    manifest = train(config(max_steps=150, batch_size=8, lr=5e-3, warmup_steps=5,
                            log_every=5), data["small"], tmp_path / "run")
    losses = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")]
    assert losses[0] > 4.0
    assert manifest.final_loss < 0.05, losses


def test_run_manifest_links_checkpoint_dataset_and_config(data, tmp_path):
    cfg = config(max_steps=3)
    manifest = train(cfg, data["dataset"], tmp_path / "run")
    on_disk = read_json_model(tmp_path / "run" / "manifest.json", RunManifest)
    version = load_training_set(data["dataset"]).version
    assert on_disk == manifest
    assert manifest.dataset_version == version
    assert manifest.config_hash == cfg.hash() and manifest.config["target"] == "cot"
    assert manifest.steps == 3 and manifest.examples_seen == 12
    assert manifest.checkpoint_path == "final" and (tmp_path / "run" / "final").is_dir()
    assert manifest.metrics["tokens_per_s"] > 0
    model, processor = load_student(tmp_path / "run" / "final")
    assert processor.image_token_id == model.config.image_token_id
    with pytest.raises(DistillError, match="already holds a run"):
        train(cfg, data["dataset"], tmp_path / "run")


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("llm", ["frozen", "lora"])
def test_frozen_parts_get_no_gradients_and_do_not_change(data, llm):
    stage = "align" if llm == "frozen" else "vqa"
    cfg = config(stage=stage, llm=llm, target="answer")
    model, processor = prepare_model(cfg, Runtime(torch.device("cpu"), torch.float32), None)
    before = _snapshot(model)
    items = load_training_set(data["dataset"], "answer").items[:4]
    from distill.train.batching import EncodedDataset, pad_collate

    dataset = EncodedDataset(items, processor, 512)
    batch = pad_collate([dataset[i] for i in range(4)], processor.pad_token_id)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        out = model(input_ids=batch.input_ids, labels=batch.labels,
                    pixel_values=processor.normalize(batch.pixel_values))
        out.loss.backward()
        optimizer.step()
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    for name, param in model.named_parameters():
        if name in trained:
            assert param.grad is not None
            continue
        assert param.grad is None, name
        assert torch.equal(param, before[name]), name
    assert any(n.startswith("projector.") for n in trained)
    assert not any(n.startswith("vision_tower.") for n in trained)
    llm_trained = [n for n in trained if n.startswith("language_model.")]
    if llm == "frozen":
        assert llm_trained == []
    else:
        assert llm_trained and all("lora_" in n for n in llm_trained)
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters()
               if n in trained and "lora_A" not in n)


def test_lora_adapter_save_load_and_merge_keep_outputs(tmp_path):
    model, processor = micro_student(seed=2)
    apply_lora(model, config().lora)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)  # a trained adapter is not the zero update
    model.eval()
    ids = torch.tensor([[1] + [processor.image_token_id] * 4 + [11, 12, 13, 14]])
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        reference = model(input_ids=ids, pixel_values=pixels).logits
    save_adapter(model, tmp_path / "adapter")
    fresh, _ = micro_student(seed=2)
    load_adapter(fresh, tmp_path / "adapter")
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(input_ids=ids, pixel_values=pixels).logits, reference)
        base, _ = micro_student(seed=2)
        assert not torch.allclose(base.eval()(input_ids=ids, pixel_values=pixels).logits,
                                  reference, atol=1e-3)
        merge_lora(fresh)
        assert not any("lora" in n for n, _ in fresh.named_parameters())
        torch.testing.assert_close(fresh(input_ids=ids, pixel_values=pixels).logits, reference,
                                   atol=1e-5, rtol=1e-4)
    save_student(fresh, processor, tmp_path / "merged")
    merged, _ = load_student(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(merged.eval()(input_ids=ids, pixel_values=pixels).logits,
                                   reference, atol=1e-5, rtol=1e-4)


def test_lora_run_saves_adapter_and_merged_student(data, tmp_path):
    manifest = train(config(stage="cot", llm="lora", max_steps=2), data["dataset"],
                     tmp_path / "run")
    final = tmp_path / "run" / manifest.checkpoint_path
    assert (final / "adapter" / "adapter_config.json").exists()
    assert not any("lora" in key for key in _weights(final))


def test_divergence_stops_with_a_clear_message(data, tmp_path):
    model, processor = micro_student()
    with torch.no_grad():
        model.projector.linear.weight[0, 0] = float("inf")  # e.g. a corrupted parent checkpoint
    save_student(model, processor, tmp_path / "poisoned")
    with pytest.raises(TrainingDivergedError,
                       match=r"training diverged at step 1: loss=nan.*no checkpoint was written"):
        train(config(max_steps=3), data["dataset"], tmp_path / "run",
              init=str(tmp_path / "poisoned"))


def test_ingest_folders_train_on_gold_answers_but_not_cot(data, tmp_path):
    items = load_training_set(data["ingest"], "gold").items
    assert len(items) == 48 and all(i.target == f"Answer: {i.sample.answer}" for i in items)
    with pytest.raises(DistillError, match="no reasoning traces"):
        load_training_set(data["ingest"], "cot")
    with pytest.raises(DistillError, match="no split 'val'"):
        load_training_set(data["ingest"], "gold", split="val")


def test_a_changed_shard_is_refused(data, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(data["small"], copy)
    shard = copy / "data" / "part-00000.jsonl"
    shard.write_text(shard.read_text().replace('"keep"', '"drop"', 1))
    with pytest.raises(InputError, match="changed since it was published"):
        load_training_set(copy)


def test_config_errors_name_the_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("stage: cot\nlearning_rate: 0.1\n")
    with pytest.raises(InputError, match=r"bad.yaml:2: field 'learning_rate': unknown key"):
        load_config(path)
    path.write_text("stage: cot\nllm: lorra\n")
    with pytest.raises(InputError, match=r"bad.yaml:2: field 'llm': .*did you mean 'lora'"):
        load_config(path)
    cfg = load_config("cot", ["lora.r=4", "max_steps=7"])
    assert cfg.lora.r == 4 and cfg.max_steps == 7
    with pytest.raises(InputError, match="projector only"):
        load_config("align", ["llm=lora"])
    # A bad value from the command line is named as an override, not as a line of the file.
    with pytest.raises(InputError, match=r"cot.yaml: field 'lr': .*from the override 'lr=-1'"):
        load_config("cot", ["lr=-1"])


def _cli(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "distill", "train", *args], cwd=REPO,
                            env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


KILL_ARGS = ["--config", "cot", "--set", "model=test-micro", "--set", "llm=full",
             "--set", "max_steps=16", "--set", "batch_size=4", "--set", "save_every=2",
             "--set", "keep_checkpoints=2", "--set", "threads=1", "--set", "log_every=1",
             "--set", "tensorboard=false"]


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    whole = _cli([*KILL_ARGS, "--data", str(data["dataset"]), "--out", str(out)])
    assert whole.wait(timeout=300) == 0, whole.stdout.read().decode()
    return out


def _steps_logged(run: Path) -> int:
    path = run / "metrics.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _kill_at_a_random_moment(args: list[str], run: Path, rng: random.Random) -> bool:
    """Start the run, SIGKILL it a random sliver after a random step was logged (anywhere:
    mid-step, mid-checkpoint, mid-rename); False if it finished first."""
    victim = _cli(args)
    target = _steps_logged(run) + rng.randint(1, 6)
    deadline = time.monotonic() + 240
    while victim.poll() is None and _steps_logged(run) < target:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(rng.uniform(0, 0.25))
    if victim.poll() is not None:
        return False
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    return True


# One kill pattern in the default run; two more in CIs slow step (.ci/run), ~28 s each
@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.slow),
                                  pytest.param(3, marks=pytest.mark.slow)])
def test_resume_after_kills_gives_the_same_weights_as_an_uninterrupted_run(
        data, uninterrupted, tmp_path, seed):
    run = tmp_path / "killed"
    args = [*KILL_ARGS, "--data", str(data["dataset"]), "--out", str(run)]
    rng = random.Random(seed)
    kills = 0
    for attempt in range(2):  # a kill, then another one in the resumed run
        kills += _kill_at_a_random_moment(args + ["--resume"] * attempt, run, rng)
    assert kills >= 1, "no kill landed while the run was working"
    resumed = _cli([*args, "--resume"])
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read().decode()
    a, b = _weights(uninterrupted / "final"), _weights(run / "final")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), f"weights differ (seed {seed})"
    curve = [(r["step"], r["loss"]) for r in read_metrics(run / "metrics.jsonl")]
    assert curve == [(r["step"], r["loss"]) for r in read_metrics(uninterrupted /
                                                                   "metrics.jsonl")]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["steps"] == 16 and manifest["checkpoint_path"] == "final"
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]
    print(f"\ntrain kill seed {seed}: {kills} SIGKILLs, final weights bitwise identical")


def test_stages_chain_through_their_checkpoints(data, tmp_path):
    """Stage 1 on gold answers of an ingest folder, stage 2 starts from its final folder."""
    align = train(config(stage="align", llm="frozen", target="gold", max_steps=2),
                  data["ingest"], tmp_path / "align")
    assert align.dataset_version is None and align.stage == "align"
    aligned = _weights(tmp_path / "align" / "final")
    vqa = train(config(stage="vqa", llm="lora", target="answer", max_steps=2),
                data["dataset"], tmp_path / "vqa", init=str(tmp_path / "align" / "final"))
    # Relative to the run's folder (lineage follows it in a moved project).
    assert vqa.parent_checkpoint == "../align/final"
    tuned = _weights(tmp_path / "vqa" / "final")
    tower = [k for k in aligned if k.startswith("vision_tower.")]
    assert tower and all(torch.equal(aligned[k], tuned[k]) for k in tower)
    assert not torch.equal(aligned["projector.linear.weight"], tuned["projector.linear.weight"])


@pytest.mark.parametrize("name", ["vision", "align", "vqa", "cot", "digits-cot",
                                  "digits-direct"])
def test_shipped_configs_load(name):
    cfg = load_config(name)
    assert cfg.stage in ("vision", "align", "vqa", "cot")
    if name.startswith("digits-"):
        assert cfg.prompt_mode() == ("cot" if name == "digits-cot" else "direct")
        assert cfg.model == "tiny-digits" and cfg.llm == "full"
