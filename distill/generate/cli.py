"""`distill generate`: the command line over ``runner.run_generate``."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from distill.core.progress import console, plain, progress_bar
from distill.generate.runner import GenerateOptions, RunSummary, run_generate


@click.command("generate")
@click.option("--samples", "samples_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder written by 'distill ingest' (holds manifest.json).")
@click.option("--teachers", "teacher_set", default="digits", show_default=True,
              help="Teacher set: a YAML path or a name in data/teachers/.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder; run the same command again to resume.")
@click.option("--splits", help="Comma-separated splits to generate (default: all).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="Run shards in this process or on Ray Data.")
@click.option("--retry-rejected", is_flag=True,
              help="Also retry permanent rejections (transient ones are always retried).")
@click.option("--flush-every", default=256, show_default=True,
              help="fsync a partial shard every N records (bounds loss on a crash).")
@click.option("--flush-seconds", default=5.0, show_default=True,
              help="... or every this many seconds, whichever comes first.")
@click.option("--ray-num-cpus", default=0.5, show_default=True,
              help="CPUs per shard task on Ray (fractional is fine).")
@click.option("--ray-num-gpus", default=0.0, show_default=True,
              help="GPUs per actor on Ray (for vllm/hf teachers).")
@click.option("--ray-actors", type=int,
              help="Actors in the Ray pool; each loads every teacher it needs once "
                   "(default: as many as the cluster's CPUs/GPUs fit).")
@click.option("--ray-tensor-parallel", default=1, show_default=True,
              help="GPUs per actor placed together on one node (a vLLM teacher's "
                   "tensor_parallel_size).")
@click.option("--wait", is_flag=True,
              help="If another run is writing to --out, wait for it instead of exiting.")
@click.option("--feed", type=click.Choice(["stream", "shard"]), default="stream",
              show_default=True,
              help="stream: keep each engine's window of requests full across shard "
                   "boundaries; shard: one shard at a time (the old path, the benchmark's "
                   "baseline).")
def generate_command(samples_dir: Path, teacher_set: str, out: Path, splits: str | None,
                     executor: str, retry_rejected: bool, flush_every: int,
                     flush_seconds: float, ray_num_cpus: float, ray_num_gpus: float,
                     ray_actors: int | None, ray_tensor_parallel: int, wait: bool,
                     feed: str) -> None:
    """Run the teachers of a teacher set over Sample shards and write Trace shards."""
    options = GenerateOptions(
        samples_dir=samples_dir, teacher_set=teacher_set, out=out,
        splits=tuple(s.strip() for s in splits.split(",") if s.strip()) if splits else None,
        executor=executor, flush_every=flush_every,  # type: ignore[arg-type]
        flush_seconds=flush_seconds, retry_rejected=retry_rejected,
        ray_num_cpus=ray_num_cpus, ray_num_gpus=ray_num_gpus, ray_actors=ray_actors,
        ray_tensor_parallel=ray_tensor_parallel, wait=wait, feed=feed)  # type: ignore[arg-type]
    generate_with_progress(options)


def generate_with_progress(options: GenerateOptions) -> RunSummary:
    """Run generation behind a traces/s progress bar, then print the summary."""
    with progress_bar("generate", unit="traces") as bar:
        summary = run_generate(options, bar_advance=bar.advance, on_total=bar.set_total,
                               status=bar.note)
    print_summary(summary)
    return summary


def print_summary(summary: RunSummary) -> None:
    done = summary.traces + summary.rejected
    rate = done / summary.seconds if summary.seconds else 0.0
    table = Table(title=f"generate -> {plain(summary.out)}", show_header=False)
    table.add_row("traces written", f"{summary.traces:,}")
    table.add_row("rejections", f"{summary.rejected:,}")
    for reason, n in summary.rejections.most_common():
        table.add_row(f"  {reason}", f"{n:,}")
    table.add_row("already done (skipped keys)", f"{summary.already_done:,}")
    table.add_row("shards done / complete skipped / reopened",
                  f"{summary.shards_done} / {summary.shards_skipped} / {summary.shards_reopened}")
    table.add_row("tokens (prompt / completion)",
                  f"{summary.prompt_tokens:,} / {summary.completion_tokens:,}")
    table.add_row("time", f"{summary.seconds:,.1f} s ({rate:,.1f} outputs/s)")
    if summary.repaired_bytes:
        table.add_row("torn tails repaired", f"{summary.repaired_bytes:,} bytes")
    if summary.duplicates_removed:
        table.add_row("duplicated keys removed", f"{summary.duplicates_removed:,}")
    if summary.engine_loads:
        workers = {worker for worker, _ in summary.engine_loads}
        table.add_row("engine loads (workers)",
                      f"{sum(summary.engine_loads.values())} ({len(workers)})")
    console.print(table)
    if summary.manifest is not None:
        transient = sum(1 for r in summary.rejections if r.startswith("engine_error"))
        if transient:
            console.print("[yellow]some requests failed at the engine; run the same command "
                          "again to retry the transient ones")


@click.command("judge")
@click.option("--traces", "traces_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A finished 'distill generate' folder (holds manifest.json).")
@click.option("--judge", "judge", required=True,
              help="Judge file: a YAML path or a name in data/judges/ (digits: the built-in "
              "digits judge).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder; run the same command again to resume.")
@click.option("--splits", help="Comma-separated splits to judge (default: all).")
@click.option("--retry-rejected", is_flag=True,
              help="Also retry permanent rejections (invalid replies, 4xx); transient ones "
              "are always retried.")
@click.option("--flush-every", default=256, show_default=True,
              help="fsync a partial shard every N records (bounds loss on a crash).")
@click.option("--flush-seconds", default=5.0, show_default=True,
              help="... or every this many seconds, whichever comes first.")
@click.option("--wait", is_flag=True,
              help="If another run is writing to --out, wait for it instead of exiting.")
def judge_command(traces_dir: Path, judge: str, out: Path, splits: str | None,
                  retry_rejected: bool, flush_every: int, flush_seconds: float,
                  wait: bool) -> None:
    """Score every trace of a generate folder with a judge model (a rubric prompt), and
    compare free-text answers it has no rule for; exactly once, resumable. Then:
    distill filter --traces TRACES --judgements OUT ..."""
    from distill.generate.judging import JudgeOptions, run_judge

    options = JudgeOptions(
        traces_dir=traces_dir, judge=judge, out=out,
        splits=tuple(s.strip() for s in splits.split(",") if s.strip()) if splits else None,
        flush_every=flush_every, flush_seconds=flush_seconds, retry_rejected=retry_rejected,
        wait=wait)
    with progress_bar("judge", unit="judgements") as bar:
        summary = run_judge(options, bar_advance=bar.advance, on_total=bar.set_total,
                            status=bar.note)
    table = Table(title=f"judge -> {plain(summary.out)}", show_header=False)
    table.add_row("judgements written", f"{summary.judged:,}")
    table.add_row("rejections", f"{summary.rejected:,}")
    for reason, n in summary.rejections.most_common():
        table.add_row(f"  {reason}", f"{n:,}")
    table.add_row("already done (skipped keys)", f"{summary.already_done:,}")
    table.add_row("shards done / complete skipped / reopened",
                  f"{summary.shards_done} / {summary.shards_skipped} / "
                  f"{summary.shards_reopened}")
    if summary.repaired_bytes:
        table.add_row("torn tails repaired", f"{summary.repaired_bytes:,} bytes")
    if summary.duplicates_removed:
        table.add_row("duplicated keys removed", f"{summary.duplicates_removed:,}")
    table.add_row("time", f"{summary.seconds:,.1f} s")
    console.print(table)
