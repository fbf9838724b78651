"""The ``distill`` command, an entry point: the only layer (with the demo) that may import
every stage. Subcommands live with the stage they drive and are imported only when called,
so ``distill --help`` stays fast and optional extras stay optional."""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from distill.core.errors import DistillError, disk_full_from

# One progress display: ours. Hugging Face's own tqdm bars (loading and writing weights)
# would interleave with it; this must be set before transformers is imported.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

# name -> "module:attribute" of a click command; each stage owns its own command.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "ingest": ("distill.ingest.cli:ingest_command", "Read items into partitioned Sample shards."),
    "generate": ("distill.generate.cli:generate_command", "Run teachers over Sample shards."),
    "judge": ("distill.generate.cli:judge_command", "Score traces with a judge model."),
    "filter": ("distill.filter.cli:filter_command", "Score, dedup and publish a dataset version."),
    "datasets": ("distill.filter.cli:datasets_group", "List, show, diff, export dataset versions."),
    "train": ("distill.train.cli:train_command", "Fine-tune the SiQ-VL student on a dataset."),
    "eval": ("distill.evaluate.cli:eval_command", "Score a model on an eval set."),
    "compare": ("distill.evaluate.cli:compare_command", "Compare eval results side by side."),
    "lineage": ("distill.evaluate.cli:lineage_command", "Print an eval result's lineage chain."),
    "demo": ("distill.demo:demo_command", "Run the whole pipeline on the embedded digits data."),
    "schemas": ("distill.schemas.cli:schemas_group", "Export the record schemas as JSON Schema."),
    "answers": ("distill.answers_report:answers_command",
                "Show how outputs' answers are read: verdicts by reason, with examples."),
}
# Commands of one stage shown under another's group: `distill eval convert` turns a
# benchmark's files into an eval set, which is ingestion's job.
SUBCOMMAND_EXTRAS: dict[str, dict[str, str]] = {
    "eval": {"convert": "distill.ingest.cli:convert_command",
             "import": "distill.evaluate.harness.cli:import_group",
             "lmms-task": "distill.evaluate.harness.cli:lmms_task_command"},
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        command = _load(SUBCOMMANDS[name][0])
        for sub_name, target in SUBCOMMAND_EXTRAS.get(name, {}).items():
            command.add_command(_load(target), sub_name)  # type: ignore[attr-defined]
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _load(target: str) -> click.Command:
    """Import a subcommand. Its module imports optional extras lazily (``require_extra``
    names the extra to install), so any ImportError here is a real bug and shows itself."""
    module_name, attribute = target.split(":")
    return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """Offline chain-of-thought distillation for small vision-language models."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s",
                        force=True)  # the CLI owns logging, also when called twice in one process


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors print one clear line and exit 2; bugs keep their traceback."""
    try:
        cli.main(args=argv, prog_name="distill", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except DistillError as exc:
        click.secho(f"error: {_one_line(exc)}", fg="red", err=True)
        return 2
    except Exception as exc:
        full = disk_full_from(exc)
        if full is None:
            raise
        click.secho(f"error: {_one_line(full)}", fg="red", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("interrupted; finished shards are kept, rerun the command to resume", err=True)
        return 130
    return 0


def _one_line(exc: BaseException) -> str:
    """The message on one line: it may quote user text (a key, a path) holding newlines,
    and scripts read the single ``error:`` line."""
    return " ".join(str(exc).replace("\r", "\n").split("\n"))


if __name__ == "__main__":
    sys.exit(main())
