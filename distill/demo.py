"""`distill demo`: the whole toolkit on the embedded digits data, one stage after another.

Every stage writes into its own folder under OUT and is resumable, so an interrupted demo
picks up where it stopped when run again.
"""

from __future__ import annotations

from pathlib import Path

import click

from distill.ingest import IngestOptions, ingest, print_summary
from distill.progress import console
from distill.sources.digits import DigitsConfig, iter_digits


def run_ingest(out: Path, config: DigitsConfig) -> Path:
    target = out / "ingest"
    if (target / "manifest.json").exists():
        console.print(f"[dim]ingest: already done ({target})")
        return target
    summary = ingest(iter_digits(config), IngestOptions(out=target),
                     description="ingest digits", total=sum(config.counts.values()))
    print_summary(summary)
    return target


@click.command("demo")
@click.option("--out", default="runs/demo", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Where every stage writes.")
@click.option("--seed", default=0, show_default=True)
def demo_command(out: Path, seed: int) -> None:
    """Run the pipeline on the embedded digits data (no downloads)."""
    run_ingest(out, DigitsConfig(seed=seed))
