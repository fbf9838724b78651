"""What it costs a checkpoint to prove itself: sealing on save, checking on resume.

A checkpoint records each file's size and hash (XXH3-128) when it is written (``seal``)
and a resume checks them before it reads anything (``read_seal``). Both are one more read
of the files. This times, side by side in one run:

* save: ``save_checkpoint`` whole (weights, optimizer, RNG, state, seal, fsync, rename),
  and the seal alone within it;
* resume: ``load_checkpoint`` whole (the check, reading, validating and applying every
  part), and the check alone within it;
* sha256 of the same files, the hash the record does not use, for comparison.

Two sizes: the micro student of the tests, and a stand-in for a full fine-tune at
realistic size: plain linear layers with ``--params`` trainable parameters (default 124M,
a quarter of Qwen2.5-0.5B's 494M; fp32 weights plus AdamW's two moments are 12 bytes a
parameter, so 1.5 GB of checkpoint, 6 GB at 0.5B). The ratio, not the seconds, is the
figure: hashing and writing both scale with the bytes.

    python bench/checkpoint_verify.py [--params 124000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from distill.train.checkpoint import (  # noqa: E402
    RECORD,
    CheckpointState,
    TrainerState,
    load_checkpoint,
    save_checkpoint,
)
from distill.train.runtime import Runtime  # noqa: E402
from distill.train.sealed import read_seal, seal  # noqa: E402

RUNTIME = Runtime(torch.device("cpu"), torch.float32)


def wide_model(params: int) -> torch.nn.Module:
    """Square linear layers (4096 wide) holding about ``params`` trainable parameters."""
    width = 4096
    layers = max(1, round(params / (width * width)))
    return torch.nn.Sequential(*[torch.nn.Linear(width, width, bias=False)
                                 for _ in range(layers)])


def micro_model() -> torch.nn.Module:
    from distill.train.siqvl.build import build_student, load_model_spec

    model, _ = build_student(load_model_spec("test-micro"), seed=0)
    model.requires_grad_(False)
    model.language_model.requires_grad_(True)
    model.projector.requires_grad_(True)
    return model


def stepped_state(model: torch.nn.Module) -> CheckpointState:
    """The model with an AdamW that has taken one step (its moments exist) at step 1."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return CheckpointState(model, optimizer, scheduler, TrainerState(1, 0, 1, 1, 1, "bench"))


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def one_round(run: Path, state: CheckpointState) -> dict[str, float]:
    """Save a checkpoint, then seal it again, check it, and resume from it: the seconds
    of each."""
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    times = {"save": timed(lambda: save_checkpoint(run, state, RUNTIME, keep=1))}
    folder = run / "checkpoint-000001"
    (folder / RECORD).unlink()
    fields = {"format": 1, "step": 1, "run": "bench", "world_size": 1}
    times["seal"] = timed(lambda: seal(folder, RECORD, fields))
    times["check"] = timed(lambda: read_seal(folder, RECORD, ["trainable.safetensors"]))
    times["resume"] = timed(lambda: load_checkpoint(folder, state, RUNTIME, 10))
    times["sha256"] = timed(lambda: [sha256_of(path) for path in sorted(folder.iterdir())])
    return times


def sha256_of(path: Path) -> str:
    """The hash the record does not use, timed on the same files for comparison."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def measure(name: str, state: CheckpointState, root: Path, repeats: int) -> None:
    rounds = [one_round(root / name, state) for _ in range(repeats)]
    rows = {key: [r[key] for r in rounds] for key in rounds[0]}
    size = sum(p.stat().st_size for p in (root / name / "checkpoint-000001").iterdir())
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"{name}: checkpoint {size / 2**20:,.1f} MiB, median of {repeats}")
    print(f"  save   {med['save']:8.3f} s, of which the seal {med['seal']:7.3f} s "
          f"({med['seal'] / med['save']:.0%}; {size / 2**20 / med['seal']:,.0f} MiB/s)")
    print(f"  resume {med['resume']:8.3f} s, of which the check {med['check']:6.3f} s "
          f"({med['check'] / med['resume']:.0%}; {size / 2**20 / med['check']:,.0f} MiB/s)")
    print(f"  sha256 of the same files, one after another: {med['sha256']:.3f} s "
          f"({med['sha256'] / med['check']:.1f}x the check)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=int, default=124_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="ckpt-verify-") as tmp:
        measure("micro student", stepped_state(micro_model()), Path(tmp), args.repeats)
        measure(f"linear layers, {args.params / 1e6:.0f}M params",
                stepped_state(wide_model(args.params)), Path(tmp), args.repeats)


if __name__ == "__main__":
    main()
