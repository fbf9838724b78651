"""What checking a dataset version costs its readers, against what they do anyway.

Every reader of a version (export, diff, train, lineage) now re-hashes what it reads: the
data shards against the manifest and the pooled images of the kept traces against their
sha256 (distill.core.dataset_versions). This builds a version of realistic traces with
images of a realistic size, then times, side by side in one process and in rounds:

* ``export``: `datasets export --format jsonl` without the check (the rows alone);
* ``check``: the check an export now runs first (shards + images, no stamp);
* ``stamped``: the same check when a stamp from an earlier check is still valid (stat only);
* ``verify``: `datasets verify` (every shard, index and image, never a stamp).

    python bench/store_verify.py            # 4,000 items x 8 traces, 160x160 images (~26 KB)
    python bench/store_verify.py --quick    # 500 items

All files are in the page cache after the first round (as right after a filter run); a cold
disk adds read time to the check and to the export alike. The last line is the headline:
``check/export: R.RR, stamped/export: S.SS``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(workdir: Path, items: int, side: int) -> tuple[Path, str]:
    from distill.filter.pipeline import FilterOptions, run_filter
    from distill.filter.policy import load_policy
    from testing.filter_data import realistic_traces, synthetic_ingest, write_generate_dir

    ingest = synthetic_ingest(workdir / "ingest", items, shard_size=max(1, items // 8),
                              image_side=side)
    gen = write_generate_dir(workdir / "gen", ingest, realistic_traces())
    result = run_filter(FilterOptions(traces=gen, store=workdir / "store",
                                      policy=load_policy()))
    return workdir / "store", result.version


def timed(work) -> float:  # noqa: ANN001 - any callable
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--side", type=int, default=160, help="image side in pixels")
    args = parser.parse_args()
    items = 500 if args.quick else 4000

    import os

    os.environ.setdefault("DISTILL_PROGRESS", "0")
    from distill.core.dataset_versions import check_version
    from distill.filter import export
    from distill.filter.store import DatasetStore

    with tempfile.TemporaryDirectory(prefix="store-verify-") as tmp:
        workdir = Path(tmp)
        start = time.perf_counter()
        root, version = build(workdir, items, args.side)
        print(f"built {items:,} items in {time.perf_counter() - start:.0f} s")
        store = DatasetStore(root)
        folder = store.version_dir(version)
        manifest = store.manifest(version)
        shard_bytes = sum((folder / ref.name).stat().st_size for ref in manifest.shards)
        first = check_version(folder)
        image_bytes = first.hashed_bytes - shard_bytes
        print(f"version {version[:16]}: {manifest.counts['kept']:,} kept traces, data shards "
              f"{shard_bytes / 1e6:.1f} MB, {first.files - len(manifest.shards):,} pooled "
              f"images of the kept traces, {image_bytes / 1e6:.1f} MB")
        stamps = workdir / "stamps"
        check_version(folder, stamps=stamps)  # leaves the stamp the "stamped" runs find
        out = workdir / "out.jsonl"

        def plain_export() -> None:
            out.unlink(missing_ok=True)
            export._export_jsonl(store, version, out)

        runs = {
            "export": plain_export,
            "check": lambda: check_version(folder),
            "stamped": lambda: check_version(folder, stamps=stamps),
            "verify": lambda: check_version(folder, everything=True),
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):  # interleaved: the box's load hits every one alike
            for name, work in runs.items():
                times[name].append(timed(work))
        assert check_version(folder, stamps=stamps).stamped
        median = {name: statistics.median(values) for name, values in times.items()}
        for name, value in median.items():
            print(f"{name:8s} median {value * 1000:8.1f} ms  (rounds: "
                  + ", ".join(f"{v * 1000:.0f}" for v in times[name]) + ")")
        shutil.rmtree(workdir / "store", ignore_errors=True)
        print(f"check/export: {median['check'] / median['export']:.2f}, "
              f"stamped/export: {median['stamped'] / median['export']:.2f}")


if __name__ == "__main__":
    main()
