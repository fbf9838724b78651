"""`distill filter` and `distill datasets`."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from distill.core.errors import DistillError
from distill.core.progress import console, plain

STORE_OPTION = click.option("--store", required=True,
                            type=click.Path(file_okay=False, path_type=Path),
                            help="The dataset store folder (created on first use).")


def _store(ctx: click.Context):  # noqa: ANN202 - DatasetStore is imported lazily
    if ctx.obj is None:
        raise click.UsageError("this command needs --store STORE (before the subcommand)")
    return ctx.obj


@click.command("filter")
@click.option("--traces", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A finished `distill generate` output folder.")
@STORE_OPTION
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Selection policy YAML (default: data/policies/default.yaml).")
@click.option("--parent", help="Build on this version (id, unique prefix or 'latest'): keep "
              "its traces and drop new ones that duplicate them.")
@click.option("--eval-set", "eval_sets", multiple=True,
              help="Drop items that match this eval set: an ingest folder (its test split), "
              "DIR:SPLIT, or a .jsonl file of Samples; repeatable.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write the run's report (Markdown + PNG) here.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="Where shards are scored.")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail",
              show_default=True, help="Stop at a malformed trace line, or set it aside in "
              "the version's rejects.jsonl.")
@click.option("--refusals", type=click.Path(dir_okay=False, path_type=Path),
              help="Refusal phrase list (default: data/refusals.txt).")
@click.option("--judgements", type=click.Path(file_okay=False, path_type=Path),
              help="A finished `distill judge` folder of these traces: its scores become "
              "the signals judge_score / judge_status (read only; nothing is asked again).")
@click.option("--ray-actors", type=int,
              help="Scoring actors on Ray (default: as many as the cluster's CPUs fit).")
@click.option("--wait", is_flag=True,
              help="If another run is writing to --store, wait for it instead of exiting.")
@click.option("--allow-empty", is_flag=True,
              help="Publish the version even if the policy keeps no trace (refused "
                   "otherwise: it is almost always a policy that does not fit the input).")
def filter_command(traces: Path, store: Path, policy_path: Path | None, parent: str | None,
                   eval_sets: tuple[str, ...], report_dir: Path | None, executor: str,
                   on_error: str, refusals: Path | None, judgements: Path | None,
                   ray_actors: int | None, wait: bool, allow_empty: bool) -> None:
    """Score, select, dedup and decontaminate traces into a dataset version.

    Prints the version id on stdout (the same input and policy always give the same id).
    """
    from distill.core.executors import RayOptions
    from distill.filter.pipeline import FilterOptions, run_filter
    from distill.filter.policy import load_policy

    options = FilterOptions(traces=traces, store=store, policy=load_policy(policy_path),
                            parent=parent, eval_sets=list(eval_sets), report_dir=report_dir,
                            executor=executor, on_error=on_error,  # type: ignore[arg-type]
                            refusals=refusals, judgements=judgements, wait=wait,
                            allow_empty=allow_empty, ray=RayOptions(actors=ray_actors))
    result = run_filter(options)
    counts = result.manifest.counts
    state = "published" if result.created else "already published (same content)"
    console.print(f"[bold green]{state}[/] dataset version {result.version[:16]}: "
                  f"{counts.get('kept', 0):,} traces kept ({counts.get('keep', 0):,} of "
                  f"{counts.get('input_traces', 0):,} new); shards scored {result.scored_shards}, "
                  f"reused {result.reused_shards}")
    reasons = ", ".join(f"{reason} {n:,}" for reason, n in
                        sorted(result.manifest.drop_reasons.items(), key=lambda kv: -kv[1])[:6])
    if reasons:
        console.print(f"dropped: {plain(reasons)}")
    derived = {k.removeprefix("kept_items:label_"): v for k, v in counts.items()
               if k.startswith("kept_items:label_")}
    if set(derived) - {"gold"}:
        console.print("items kept by label source: " + ", ".join(
            f"{k} {v:,}" for k, v in sorted(derived.items()))
            + " (consensus/judge labels are derived, not gold)")
    unlabeled = sum(v for k, v in counts.items() if k.startswith("items_unlabeled:"))
    if unlabeled:
        console.print(f"[yellow]{unlabeled:,} item(s) have neither gold nor a derived label "
                      "(listed in the report)")
    console.print(f"report: {plain(result.report)}")
    click.echo(result.version)


@click.group("datasets")
@click.option("--store", type=click.Path(file_okay=False, path_type=Path),
              help="The dataset store folder.")
@click.pass_context
def datasets_group(ctx: click.Context, store: Path | None) -> None:
    """List, show, diff, export and verify dataset versions."""
    from distill.filter.store import DatasetStore

    ctx.obj = DatasetStore(store) if store is not None else None


@datasets_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """Every version, oldest first; a damaged one (its manifest unreadable) is listed as
    such after the others."""
    store = _store(ctx)
    versions, damaged = store.scan()
    if as_json:
        click.echo(json.dumps([{"version": m.version, "parent": m.parent,
                                "created_at": m.created_at.isoformat(),
                                "policy": m.policy.get("name"), "kept": m.counts.get("kept", 0)}
                               for m in versions]
                              + [{"version": name, "damaged": why} for name, why in damaged],
                              indent=2))
        return
    table = Table(title=f"dataset versions in {plain(store.root)}")
    for column in ("version", "created", "parent", "policy", "kept", "new input"):
        table.add_column(column)
    for m in versions:
        table.add_row(m.version[:16], m.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                      (m.parent or "-")[:12], plain(m.policy.get("name")),
                      f"{m.counts.get('kept', 0):,}", f"{m.counts.get('input_traces', 0):,}")
    for name, _ in damaged:
        table.add_row(name[:16], "[red]damaged[/]", "-", "-", "-", "-")
    console.print(table)
    for name, why in damaged:
        console.print(f"[red]damaged[/] {name[:16]}: {plain(why)}")


@datasets_group.command("show")
@click.argument("version")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.pass_context
def show_command(ctx: click.Context, version: str, as_json: bool) -> None:
    """A version's manifest: lineage, policy, counts, drop reasons, shards."""
    store = _store(ctx)
    manifest = store.manifest(store.resolve(version))
    if as_json:
        click.echo(manifest.model_dump_json(indent=2))
        return
    folder = store.version_dir(manifest.version)
    lineage, parent = [], manifest.parent
    while parent is not None and len(lineage) < 50:
        try:
            grandparent = store.manifest(parent).parent
        except DistillError:
            lineage.append(f"{parent[:12]} (missing or damaged)")
            break
        lineage.append(parent[:12])
        parent = grandparent
    lines = [
        f"version     {manifest.version}",
        f"created     {manifest.created_at.isoformat()}",
        f"lineage     {' <- '.join([manifest.version[:12], *lineage])}",
        f"traces      {(folder / manifest.trace_dir).resolve()} ({len(manifest.inputs)} "
        "shards)",
        f"policy      {plain(manifest.policy.get('name'), 'log')} ({manifest.policy_hash[:16]})",
        f"teachers    {plain(', '.join(manifest.teachers) or '-', 'log')}",
        f"eval sets   {plain('; '.join(manifest.eval_sets) or '-', 'log')}",
        f"images      {(folder / (manifest.image_root or '.')).resolve()}",
        "counts      " + ", ".join(f"{k} {v:,}" for k, v in manifest.counts.items()),
        "dropped     " + (", ".join(f"{k} {v:,}" for k, v in sorted(
            manifest.drop_reasons.items(), key=lambda kv: -kv[1])) or "-"),
        f"data        {len(manifest.shards)} shards, "
        f"{sum(r.rows for r in manifest.shards):,} rows",
        f"scored      {len(manifest.scored_shards)} shards, "
        f"{sum(r.rows for r in manifest.scored_shards):,} rows",
        "scorers     " + ", ".join(f"{k}={v}" for k, v in sorted(manifest.scorer_versions.items())),
    ]
    click.echo("\n".join(lines))


@datasets_group.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--examples", default=3, show_default=True, help="Example traces per reason.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def diff_command(ctx: click.Context, a: str, b: str, examples: int, as_json: bool) -> None:
    """What B added and removed relative to A, and why."""
    store = _store(ctx)
    from distill.filter.diff import diff_versions, format_diff

    diff = diff_versions(store, a, b, examples=examples)
    click.echo(json.dumps(diff.to_dict(), indent=2) if as_json else format_diff(diff))


@datasets_group.command("export")
@click.argument("version")
@click.option("--format", "fmt", default="jsonl", show_default=True,
              type=click.Choice(["jsonl", "parquet", "hf", "trl", "llamafactory", "swift"]),
              help="jsonl/parquet/hf: one flat row per trace with every signal. trl, "
                   "llamafactory, swift: the kept traces as chat conversations in the layout "
                   "that trainer reads (TRL SFTTrainer, LLaMA-Factory sharegpt, ms-swift).")
@click.option("--target", type=click.Choice(["cot", "direct"]), default="cot",
              show_default=True,
              help="Conversation formats: the assistant's turn is the teacher's reasoning and "
                   "an answer line (cot) or the answer line alone (direct), as distill train.")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output file (jsonl, parquet) or folder (the others).")
@click.pass_context
def export_command(ctx: click.Context, version: str, fmt: str, target: str, out: Path) -> None:
    """Write a version as flat rows, or as conversations other trainers read."""
    store = _store(ctx)
    from distill.filter.conversations import CONVERSATION_FORMATS, export_conversations
    from distill.filter.export import export_version

    resolved = store.resolve(version)  # each export opens (checks) the version itself
    if fmt in CONVERSATION_FORMATS:
        rows = export_conversations(store, resolved, fmt, target, out)  # type: ignore[arg-type]
        what = f"{fmt}, target {target}"
    else:
        rows = export_version(store, resolved, fmt, out)  # type: ignore[arg-type]
        what = fmt
    console.print(f"exported {rows:,} rows of {resolved[:16]} to {plain(out)} ({what})")


@datasets_group.command("verify")
@click.argument("version", default="latest")
@click.pass_context
def verify_command(ctx: click.Context, version: str) -> None:
    """Re-read and re-hash every file of a version: its manifest against its name, every
    shard against the manifest, every pooled image its records name against its sha256."""
    store = _store(ctx)
    from distill.filter.store import verify_version

    resolved = store.resolve(version)
    problems = verify_version(store, resolved)
    if problems:
        raise DistillError(f"version {resolved[:16]} is damaged: " + "; ".join(problems))
    click.echo(f"ok {resolved}")


@datasets_group.command("signals")
def signals_command() -> None:
    """The signal vocabulary policies can test (Markdown table)."""
    from distill.filter.signals import signal_table_markdown

    click.echo(signal_table_markdown())
