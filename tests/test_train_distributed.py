"""The same `distill train` under torchrun (gloo, 2 CPU processes): same loss as 1 process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distill.train.metrics import read_metrics
from tests.train_support import make_dataset, make_ingest

REPO = Path(__file__).resolve().parents[1]
COMMON = ["--config", "cot", "--set", "model=test-micro", "--set", "llm=full",
          "--set", "max_steps=3", "--set", "batch_size=8", "--set", "micro_batch_size=2",
          "--set", "threads=1", "--set", "log_every=1", "--set", "save_every=2",
          "--set", "tensorboard=false"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dist-data")
    return make_dataset(make_ingest(root / "ingest", train=32, test=4), root / "version")


def _run(args: list[str], processes: int) -> None:
    env = dict(os.environ, DISTILL_PROGRESS="0", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO))
    prefix = [sys.executable, "-m", "distill"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={processes}", "-m", "distill"]
    done = subprocess.run([*prefix, "train", *COMMON, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run / "metrics.jsonl")]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=1e-6, rtol=1e-5, msg=key)


@pytest.fixture(scope="module")
def single(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    _run(["--data", str(dataset), "--out", str(out)], 1)
    return out


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_give_the_loss_of_one_with_the_same_global_batch(
        dataset, single, tmp_path, strategy):
    out = tmp_path / strategy
    _run(["--data", str(dataset), "--out", str(out), "--set", f"strategy={strategy}"], 2)
    one, two = _losses(single), _losses(out)
    assert len(one) == len(two) == 3
    for a, b in zip(one, two, strict=True):
        assert b == pytest.approx(a, rel=1e-5)
    assert one[-1] < one[0]
    _assert_same_weights(single / "final", out / "final")


@pytest.mark.slow
def test_fsdp_run_resumes_from_its_checkpoint(dataset, single, tmp_path):
    out = tmp_path / "fsdp"
    args = ["--data", str(dataset), "--out", str(out), "--set", "strategy=fsdp"]
    _run(args, 2)
    assert (out / "checkpoint-000002").is_dir()
    shutil.rmtree(out / "final")  # as if killed after the checkpoint at step 2
    _run([*args, "--resume"], 2)
    _assert_same_weights(single / "final", out / "final")
