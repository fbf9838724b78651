"""`distill train`: fine-tune the SiQ-VL student (or pretrain its tower, stage 0)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from distill.core.errors import DiskFullError, DistillError, disk_full_from
from distill.core.folders import claim_output
from distill.core.progress import console, plain
from distill.train.config import SEED_LIMIT


@click.command("train")
@click.option("--config", "config_path", required=True,
              help="Train config: a YAML path or a name in data/configs (align, vqa, cot, ...).")
@click.option("--data", "data", type=click.Path(path_type=Path),
              help="Dataset version folder (distill filter) or ingest folder (distill ingest).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: checkpoints, metrics.jsonl, manifest.json, final/.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--init", "init", type=click.Path(path_type=Path),
              help="Start from a saved student (e.g. the previous stage's RUN/final).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config field (YAML value; dotted keys: lora.r=8). Repeatable.")
@click.option("--wait", is_flag=True,
              help="If another run is writing to --out, wait for it instead of exiting.")
@click.option("--seeds", help="Train this recipe once per seed (e.g. 0,1,2) into "
                               "OUT/seed-N: side by side on CPU cores, one after another on "
                               "a GPU; finished seeds are skipped, partial ones resume.")
@click.option("--adopt-old-checkpoints", "adopt", is_flag=True,
              help="With --resume: record the files of checkpoints written before "
                   "checkpoints recorded their hashes, vouching for them as they are now "
                   "(each must hold every file a resume reads), then resume.")
@click.argument("extra", nargs=-1)
def train_command(config_path: str, data: Path | None, out: Path, resume: bool,
                  init: Path | None, overrides: tuple[str, ...], wait: bool,
                  seeds: str | None, adopt: bool, extra: tuple[str, ...]) -> None:
    """Train one stage. Extra KEY=VALUE arguments are config overrides too."""
    from distill.train.checkpoint import is_finished
    from distill.train.config import load_config
    from distill.train.loop import train

    # One stage's output is never another's folder, nor holds this run's own --init.
    claim_output(out, "train", inputs=[init] if init else [],
                 input_folders=[data] if data else [])
    if adopt:
        if not resume or seeds is not None:
            raise DistillError("--adopt-old-checkpoints goes with --resume of one run (not "
                               "--seeds: adopt each seed folder's run with its own --out)")
        adopt_old_checkpoints(out, wait)

    config = load_config(config_path, list(overrides) + list(extra))
    if config.stage != "vision" and data is None:
        raise DistillError(f"stage {config.stage!r} needs --data (a dataset version or an "
                           "ingest folder)")
    if seeds is not None:
        if init is not None:
            config = config.model_copy(update={"init": str(init)})
        train_seeds(config, data or Path("."), out, parse_seeds(seeds), wait)
        return
    was_finished = resume and is_finished(out)
    try:
        manifest = train(config, data or Path("."), out, resume=resume,
                         init=str(init) if init else None, wait=wait)
    except Exception as exc:
        full = disk_full_from(exc)
        if full is None:
            raise
        raise DiskFullError(full.path, rerun="run the same command with --resume to continue "
                            "from the last checkpoint") from exc
    if os.environ.get("RANK", "0") != "0":
        return
    loss = f"{manifest.final_loss:.4f}" if manifest.final_loss is not None else "n/a"
    speed = manifest.metrics.get("tokens_per_s")
    if was_finished:
        console.print(f"[green]already finished[/green] {manifest.stage}: {manifest.steps} "
                      f"steps, nothing trained -> {out / manifest.checkpoint_path}")
        return
    console.print(f"[green]trained[/green] {manifest.stage}: {manifest.steps} steps, final loss "
                  f"{loss}" + (f", {speed:,.0f} real tokens/s" if speed else "")
                  + f" -> {out / manifest.checkpoint_path}")


def adopt_old_checkpoints(out: Path, wait: bool) -> None:
    """Record the old checkpoints of the run in OUT, under its lock (see --help)."""
    from distill.train.checkpoint import adopt_unrecorded
    from distill.train.loop import run_lock

    with run_lock(out, wait):
        adopted, refused = adopt_unrecorded(out)
    for line in adopted:
        console.print(f"adopted {plain(line)}")
    for line in refused:
        console.print(f"[yellow]not adopted: {plain(line)}")
    if not adopted and not refused:
        console.print(f"no checkpoint without a record in {plain(str(out))}: nothing adopted")


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers",
                                 param_hint="--seeds") from None
    if not seeds:
        raise click.BadParameter("no seeds given", param_hint="--seeds")
    bad = [seed for seed in seeds if not 0 <= seed < SEED_LIMIT]
    if bad:
        raise click.BadParameter(f"seed {bad[0]} is out of range: a seed is an integer from 0 "
                                 f"to {SEED_LIMIT - 1}", param_hint="--seeds")
    return seeds


def train_seeds(config, data: Path, out: Path, seeds: list[int], wait: bool = False) -> None:
    """Every seed of one recipe, each in a process of its own (resuming what it can)."""
    import torch

    from distill.train.parallel import seed_processes, train_seed_group

    processes, threads = seed_processes(len(seeds), cuda=torch.cuda.is_available())
    if config.threads == "auto":
        config = config.model_copy(update={"threads": threads})
    train_seed_group(config, data, out, seeds, processes, wait=wait)
    console.print(f"[green]trained[/green] seeds {', '.join(map(str, seeds))} -> "
                  f"{out}/seed-N ({processes} at a time)")
