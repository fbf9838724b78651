"""`distill eval`, `distill compare` and `distill lineage`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from distill.core.errors import DistillError
from distill.core.evalsets import load_eval_set
from distill.core.formatting import accuracy_interval, percent
from distill.core.progress import plain
from distill.core.shards import check_writable_folder
from distill.evaluate.cache import default_cache_dir
from distill.evaluate.compare import model_label
from distill.evaluate.results import write_result
from distill.evaluate.runner import DEFAULT_CHUNK, LARGE_CHUNK, EvalRun, evaluate_model


def _stdout() -> Console:
    """Reports go to stdout (progress bars and warnings go to stderr)."""
    return Console(highlight=False)


def _parse_options(pairs: tuple[str, ...]) -> tuple[tuple[str, object], ...]:
    from distill.core.config_files import yaml_value

    parsed = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}",
                                     param_hint="--engine-option")
        parsed.append((key, yaml_value(value, f"--engine-option {key}") if value else ""))
    return tuple(parsed)


def _print_runs(rows: list[tuple[EvalRun, str, Path]]) -> None:
    table = Table(title="eval results")
    for name in ("model", "eval set", "mode", "n", "acc % [95% CI]", "unparsed %", "tok/s",
                 "new", "cached"):
        table.add_column(name, justify="left" if name in ("model", "eval set", "mode")
                         else "right")
    for run, set_name, _ in rows:
        m = run.result.metrics
        table.add_row(plain(model_label(run.result)), plain(set_name), plain(run.result.mode),
                      str(int(m["n"])),
                      accuracy_interval(m), percent(m["unparseable_rate"]),
                      f"{m['tokens_per_s']:.0f}",
                      str(run.generated), str(run.reused))
    console = _stdout()
    console.print(table)
    for _, _, path in rows:
        console.print(f"wrote {plain(path)}")


@click.group("eval", invoke_without_command=True)
@click.option("--model", "model_spec", metavar="SPEC",
              help="siqvl:PATH (run or checkpoint), hf:PATH (local transformers model), "
                   "engine:ENGINE:MODEL (e.g. engine:builtin:knn) or engine:TEACHERSET#ID "
                   "(e.g. engine:digits#logreg; engine:vllm:RUN/final serves a student "
                   "through vLLM); a bare PATH is recognised by its files.")
@click.option("--data", "data_specs", multiple=True, metavar="EVALSET",
              help="An ingest folder (DIR or DIR:SPLIT, default split test) or a JSONL file "
                   "of Samples. Repeat for several eval sets.")
@click.option("--split", help="Split of the ingest folder(s) (default: test).")
@click.option("--image-root", type=click.Path(file_okay=False, path_type=Path),
              help="Folder image paths are relative to (default: from the eval set).")
@click.option("--mode", "modes", multiple=True, type=click.Choice(["cot", "direct"]),
              help="cot (reason, then answer) and/or direct (answer only). Default: cot.")
@click.option("--out", default=Path("runs/eval"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the EvalResult JSON files.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Generation cache (default: $DISTILL_EVAL_CACHE or ~/.cache/distill/eval).")
@click.option("--no-cache", is_flag=True, help="Generate everything, store nothing.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1),
              help="Samples per generate batch.")
@click.option("--max-new-tokens", default=512, show_default=True, type=click.IntRange(min=1))
@click.option("--dtype", default="auto", show_default=True,
              type=click.Choice(["auto", "bfloat16", "float16", "float32"]))
@click.option("--device", help="cuda, cuda:1, cpu (default: cuda when available).")
@click.option("--prompt", help="Prompt file or name in prompts/ (hf/engine; default: the "
                               "mode's prompt, prompts/cot.yaml or prompts/direct.yaml).")
@click.option("--chunk-size", type=click.IntRange(min=1),
              help=f"Items generated between two durable cache writes (default "
                   f"{DEFAULT_CHUNK}; {LARGE_CHUNK} for engines that batch best when they "
                   "see everything, like vLLM).")
@click.option("--engine-option", "engine_options", multiple=True, metavar="KEY=VALUE",
              help="An option of the engine (engine:...), e.g. base_url=http://host:8000/v1; "
                   "the value is read as YAML (numbers, booleans).")
@click.option("--threads", type=click.IntRange(min=1),
              help="CPU threads for torch (on a busy or small machine, 1 is often fastest).")
@click.option("--wait", is_flag=True, help="If another eval is writing the same cache entry "
                                           "(same model and config), wait for it.")
@click.pass_context
def eval_command(ctx: click.Context, model_spec: str | None, data_specs: tuple[str, ...],
                 split: str | None, image_root: Path | None, modes: tuple[str, ...], out: Path,
                 cache_dir: Path | None, no_cache: bool, batch_size: int, max_new_tokens: int,
                 dtype: str, device: str | None, prompt: str | None, chunk_size: int | None,
                 engine_options: tuple[str, ...], threads: int | None, wait: bool) -> None:
    """Score a model on eval sets; every item keeps its raw output, extracted answer and
    judgment. Re-runs only generate for items the cache lacks.

    \b
    distill eval --model siqvl:runs/stage2 --data work/digits --mode cot --mode direct
    distill eval convert mathvista testmini.json --out evalsets/mathvista
    distill eval import lmms-eval lmms_out/ --task mmstar --data evalsets/mmstar
    distill eval lmms-task --data work/digits --out tasks/
    """
    if ctx.invoked_subcommand is not None:
        return
    if not model_spec or not data_specs:
        raise click.UsageError("--model and at least one --data are required "
                               "(or a subcommand: convert, import, lmms-task)")
    from distill.core.predictors import PredictorOptions

    options = PredictorOptions(batch_size=batch_size, max_new_tokens=max_new_tokens, dtype=dtype,
                               device=device, prompt=prompt,
                               engine_options=_parse_options(engine_options))
    eval_sets = [load_eval_set(spec, split=split, image_root=image_root) for spec in data_specs]
    cache = None if no_cache else (cache_dir or default_cache_dir())
    # Where the results go must be writable before any model runs, not after.
    check_writable_folder(out, "--out")
    if cache is not None:
        check_writable_folder(cache, "--cache-dir")
    runs = evaluate_model(model_spec, options, eval_sets, modes or ("cot",),  # type: ignore[arg-type]
                          cache_dir=cache, chunk_size=chunk_size, threads=threads, wait=wait)
    rows = []
    for eval_set, run in runs:
        path = write_result(run.result, out, eval_set.name)
        rows.append((run, eval_set.name, path))
    _print_runs(rows)


def _expand_results(paths: tuple[Path, ...]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.json"))
            if not found:
                raise DistillError(f"{path} holds no result files (*.json)")
            files.extend(found)
        else:
            files.append(path)
    return files


@click.command("compare")
@click.argument("results", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Write compare.md, accuracy.png and compare.html (flipped items) here.")
@click.option("--baseline", default=0, show_default=True,
              help="Index of the result (or seed group) the others are compared with (0 = "
                   "the first named).")
@click.option("--max-flips", default=200, show_default=True,
              help="Flipped items listed per direction and pair.")
@click.option("--by-seed", is_flag=True,
              help="Group the results that differ only in training seed (read from their "
                   "run manifests) and compare the groups over seeds and items.")
@click.option("--group", "groups", multiple=True, metavar="LABEL=RESULT[,RESULT...]",
              help="A seed group named explicitly (repeatable; implies --by-seed).")
@click.option("--teacher", "teacher_paths", multiple=True, metavar="RESULT",
              type=click.Path(path_type=Path),
              help="A teacher's result on the same eval set (distill eval --model "
                   "engine:SET#ID; a file or a folder of them; repeatable): a row beside the "
                   "students and a reference line in the plots; with --by-seed or --group, "
                   "each recipe's share of the best teacher, with its interval.")
def compare_command(results: tuple[Path, ...], out: Path | None, baseline: int,
                    max_flips: int, by_seed: bool, groups: tuple[str, ...],
                    teacher_paths: tuple[Path, ...]) -> None:
    """Put eval RESULTS (files, or folders of them) side by side: accuracy per category,
    deltas with paired tests, and the items that flipped; with --by-seed or --group, also
    every recipe over its training seeds (mean, each seed, two-level bootstrap interval,
    paired test across seeds). Teachers (--teacher) stand beside them as references."""
    from distill.evaluate.compare import compare_results, load_results
    from distill.evaluate.report import print_comparison, write_reports
    from distill.evaluate.seed_report import print_seeds

    named = _parse_groups(groups)
    files = _expand_results(results) if results else []
    files += [path for paths in named.values() for path in paths if path not in files]
    if not files:
        raise click.UsageError("name result files (or --group LABEL=RESULT,...)")
    loaded = load_results(files)
    teachers = load_results(_expand_results(teacher_paths)) if teacher_paths else []
    seeds = (_seed_comparison(loaded, named, baseline, teachers) if (by_seed or named)
             else None)
    comparison = compare_results(loaded, baseline=0 if seeds else baseline, teachers=teachers)
    console = _stdout()
    print_comparison(comparison, console)
    if seeds is not None:
        print_seeds(seeds, console)
    if out is not None:
        paths = write_reports(comparison, out, max_flips=max_flips, seeds=seeds)
        for kind, path in paths.items():
            console.print(f"{kind}: {plain(path)}")


def _parse_groups(groups: tuple[str, ...]) -> dict[str, list[Path]]:
    named: dict[str, list[Path]] = {}
    for item in groups:
        label, sep, paths = item.partition("=")
        if not sep or not label or not paths:
            raise click.BadParameter(f"{item!r} is not LABEL=RESULT[,RESULT...]",
                                     param_hint="--group")
        named[label] = [Path(p) for p in paths.split(",") if p]
    return named


def _seed_comparison(loaded, named: dict[str, list[Path]], baseline: int, teachers):
    from distill.evaluate.seeds import compare_groups, group_by_recipe, named_groups

    groups = named_groups(named) if named else group_by_recipe(loaded)
    return compare_groups(groups, baseline=baseline, teachers=teachers)


@click.command("lineage")
@click.argument("result", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--no-verify", is_flag=True, help="Skip re-hashing shards and checkpoints.")
def lineage_command(result: Path, no_verify: bool) -> None:
    """Print the chain behind an eval RESULT: eval set, checkpoint, run, dataset version,
    traces (teachers, prompts) and ingested samples, flagging every broken link."""
    from distill.evaluate.lineage import trace_lineage

    links = trace_lineage(result, verify=not no_verify)
    console = _stdout()
    marks = {"ok": "[green]ok[/]", "broken": "[red]BROKEN[/]", "not recorded": "[dim]-[/]"}
    for index, link in enumerate(links):
        indent = "  " * (min(index, 1) + link.depth)  # deeper: a parent version, a teacher
        console.print(f"{indent}[bold]{link.kind}[/] {marks[link.status]} "
                      f"{plain(link.path or '')}")
        for detail in link.details:
            console.print(f"{indent}    {plain(detail)}")
        for problem in link.problems:
            console.print(f"{indent}    [red]! {plain(problem)}[/]")
    broken = [link for link in links if link.status == "broken"]
    if broken:
        raise DistillError(f"lineage has {len(broken)} broken link(s): "
                           + ", ".join(link.kind for link in broken))
