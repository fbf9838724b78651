"""Filter throughput, and our near-duplicate step against a datasketch baseline.

Builds realistic teacher traces (2 teachers x k=4 per item, ~170-word reasoning, wrong
answers, truncations, loops, refusals, tag soup, garbage) with planted near-duplicates
(copies of another trace of the same item with 1-3 words changed plus case/punctuation
noise) in generate's layout, then measures, for each input size:

* the whole `distill filter` (a fresh process: scoring, selection, dedup, publishing,
  report): traces/s and peak memory (max RSS);
* the near-duplicate step alone on the same texts (question + reasoning + answer), each
  method in a fresh process: ours (numpy MinHash + LSH keys spilled to disk + connected
  components) and datasketch (MinHash.update_batch per text + MinHashLSH query/insert),
  with the same shingles (word 5-grams), 128 permutations and LSH bands (threshold 0.7);
  traces/s, recall and precision on the planted duplicates, J-precision (the share of
  flagged traces whose exact Jaccard similarity with the trace they were matched to is at
  least the threshold: unplanted but genuine near-duplicates count as right), and the
  memory the step adds on top of the loaded texts.

    python bench/filter_throughput.py            # 50k, 100k, 200k traces
    python bench/filter_throughput.py --quick    # 1.5k, 3k, 6k traces, same figures

The last line is the headline: our near-dup throughput over datasketch's at the largest
size (``ratio: N.NN``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRACES_PER_ITEM = 8  # 2 teachers x k=4
THRESHOLD = 0.7
SHARDS_AT_LARGEST = 40  # every size is a whole number of equal shards


def build_inputs(workdir: Path, sizes: list[int]) -> dict[int, Path]:
    """One generate folder for the largest size; smaller sizes list a prefix of its shards."""
    from distill.core.shards import read_json_model, write_json_atomic
    from distill.schemas import StageManifest
    from testing.filter_data import realistic_traces, synthetic_ingest, write_generate_dir

    largest = max(sizes)
    planted: list[tuple[str, str]] = []
    shard_items = max(1, largest // TRACES_PER_ITEM // SHARDS_AT_LARGEST)
    ingest = synthetic_ingest(workdir / "ingest", largest // TRACES_PER_ITEM,
                              shard_size=shard_items)
    full = write_generate_dir(workdir / f"gen-{largest}", ingest,
                              realistic_traces(planted=planted))
    (workdir / "planted.json").write_text(json.dumps(planted))
    manifest = read_json_model(full / "manifest.json", StageManifest)
    folders = {largest: full}
    for size in sizes:
        if size == largest:
            continue
        folder = workdir / f"gen-{size}"
        refs, rows = [], 0
        for ref in manifest.shards:
            if rows >= size:
                break
            target = folder / ref.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(full / ref.name, target)
            refs.append(ref)
            rows += ref.rows
        write_json_atomic(folder / "manifest.json", manifest.model_copy(update={"shards": refs}))
        folders[size] = folder
    return folders


def dedup_texts(gen: Path, out: Path) -> int:
    """question + reasoning + final answer of every trace, one JSON line each: the text
    both near-dup methods compare."""
    from distill.core.shards import iter_records
    from distill.filter.inputs import open_generate_dir
    from distill.filter.score import dedup_text
    from distill.schemas import Sample, Trace

    generate = open_generate_dir(gen)
    count = 0
    with open(out, "w", encoding="utf-8") as handle:
        for pair in generate.shards:
            questions = {s.id: s.question for s in iter_records(pair.sample_path, Sample)}
            for trace in iter_records(pair.trace_path, Trace):
                text = dedup_text(questions[trace.sample_id], trace.reasoning, trace.final_answer)
                handle.write(json.dumps([trace.trace_key, text]) + "\n")
                count += 1
    return count


def measure(args: list[str]) -> tuple[float, float, str]:
    """(wall seconds, the child's own peak RSS in MiB, its stdout) of a fresh process."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=stderr, env={**os.environ, "DISTILL_PROGRESS": "0"})
        assert process.stdout is not None
        stdout = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)  # this child's rusage, not all children's
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        if process.returncode != 0:
            stderr.seek(0)
            raise RuntimeError(f"{args} failed:\n{stderr.read().decode()[-3000:]}")
    return wall, usage.ru_maxrss / 1024, stdout.decode()


# --- the near-dup worker (runs in its own process) -------------------------------------------


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def near_dup_worker(method: str, texts_path: Path, planted_path: Path) -> None:
    keys, texts = [], []
    with open(texts_path, encoding="utf-8") as handle:
        for line in handle:
            key, text = json.loads(line)
            keys.append(key)
            texts.append(text)
    planted = {copy for copy, _ in json.loads(planted_path.read_text())} & set(keys)
    import numpy as np  # noqa: F401 - loaded before the baseline RSS is taken

    if method == "datasketch":
        import datasketch  # noqa: F401
    else:
        import scipy.sparse.csgraph  # noqa: F401

        import distill.filter.dedup  # noqa: F401
    before = _rss_mib()
    start = time.perf_counter()
    matches = _ours(texts) if method == "ours" else _datasketch(texts)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    found = {keys[i] for i in matches}
    similar = sum(1 for i, candidates in matches.items()
                  if max(_jaccard(texts[i], texts[c]) for c in candidates) >= THRESHOLD)
    print(json.dumps({
        "method": method, "texts": len(texts), "seconds": seconds,
        "traces_per_s": len(texts) / seconds, "flagged": len(found),
        "recall": len(found & planted) / max(1, len(planted)),
        "precision": len(found & planted) / max(1, len(found)),
        "precision_jaccard": similar / max(1, len(matches)),
        "planted": len(planted), "added_mib": peak - before, "peak_mib": peak,
    }))


def _shingles(text: str) -> set[str]:
    words = text.lower().translate(_ASCII_TO_SPACE).split()
    return {" ".join(words[i:i + 5]) for i in range(max(1, len(words) - 4))}


def _jaccard(a: str, b: str) -> float:
    """The exact Jaccard similarity of two texts' word 5-gram sets (not an estimate)."""
    left, right = _shingles(a), _shingles(b)
    return len(left & right) / max(1, len(left | right))


def _ours(texts: list[str]) -> dict[int, list[int]]:
    """Flagged text -> the text its group keeps (the earliest)."""
    import numpy as np

    from distill.filter.dedup import DuplicateFinder, exact_keys, partitions_for
    from distill.filter.minhash import MinHasher, band_keys, has_words, lsh_params

    hasher = MinHasher()
    bands, rows = lsh_params(THRESHOLD, hasher.num_perm)
    with tempfile.TemporaryDirectory() as spill:
        finder = DuplicateFinder(Path(spill), partitions=partitions_for(len(texts) * (bands + 1)),
                                 threshold=THRESHOLD)
        batch = 4096
        for lo in range(0, len(texts), batch):
            signatures, text_hashes = hasher.signatures(texts[lo:lo + batch])
            ordinals = np.arange(lo, lo + len(text_hashes))
            finder.add_signatures(signatures)
            finder.add(ordinals, exact=exact_keys(text_hashes))
            words = has_words(signatures)
            finder.add(ordinals[words], bands=band_keys(signatures[words], bands, rows))
        result = finder.resolve(len(texts))
    flagged = np.flatnonzero(result.representative != np.arange(len(texts)))
    return {int(i): [int(result.representative[i])] for i in flagged}


_ASCII_TO_SPACE = str.maketrans({chr(c): " " for c in range(128) if not chr(c).isalnum()})


def _datasketch(texts: list[str]) -> dict[int, list[int]]:
    """The baseline as datasketch's documentation uses it, with the same shingles:
    flagged text -> the earlier texts its LSH query returned."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=128)
    template = MinHash(num_perm=128)
    flagged = {}
    for index, text in enumerate(texts):
        words = text.lower().translate(_ASCII_TO_SPACE).split()
        grams = [" ".join(words[i:i + 5]) for i in range(max(1, len(words) - 4))]
        minhash = template.copy()
        minhash.update_batch([g.encode("utf-8") for g in grams])
        candidates = lsh.query(minhash)
        if candidates:
            flagged[index] = candidates
        else:
            lsh.insert(index, minhash)
    return flagged


# --- the bench -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1.5k/3k/6k traces (< 45 s)")
    parser.add_argument("--sizes", help="comma-separated trace counts")
    parser.add_argument("--workdir", type=Path, help="keep inputs and stores here")
    parser.add_argument("--near-dup-worker", nargs=3, metavar=("METHOD", "TEXTS", "PLANTED"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.near_dup_worker:
        method, texts, planted = args.near_dup_worker
        near_dup_worker(method, Path(texts), Path(planted))
        return
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else \
        ([1500, 3000, 6000] if args.quick else [50_000, 100_000, 200_000])
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="filter-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        run_bench(workdir, sorted(sizes))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _quality(result: dict) -> str:
    return (f"{result['recall']:.3f} / {result['precision']:.3f} / "
            f"{result['precision_jaccard']:.3f}")


def run_bench(workdir: Path, sizes: list[int]) -> None:
    started = time.perf_counter()
    folders = build_inputs(workdir, sizes)
    print(f"machine: {os.cpu_count()} CPUs; inputs built in "
          f"{time.perf_counter() - started:.1f} s ({max(sizes):,} traces, "
          f"{max(sizes) // TRACES_PER_ITEM:,} items)")
    print()
    print("| traces | filter traces/s | filter peak RSS MiB | ours near-dup traces/s | "
          "datasketch traces/s | ratio | ours recall / precision / J-precision | datasketch "
          "recall / precision / J-precision | ours added MiB | datasketch added MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ratio = 0.0
    results = []
    for size in sizes:
        gen = folders[size]
        store = workdir / f"store-{size}"
        shutil.rmtree(store, ignore_errors=True)
        wall, peak, _ = measure(["-m", "distill", "filter", "--traces", str(gen), "--store",
                                 str(store)])
        texts = workdir / f"texts-{size}.jsonl"
        count = dedup_texts(gen, texts)
        near = {}
        for method in ("ours", "datasketch"):
            _, _, out = measure([str(Path(__file__).resolve()), "--near-dup-worker", method,
                                 str(texts), str(workdir / "planted.json")])
            near[method] = json.loads(out.strip().splitlines()[-1])
        ours, base = near["ours"], near["datasketch"]
        ratio = ours["traces_per_s"] / base["traces_per_s"]
        results.append({"traces": count, "filter_s": wall, "filter_peak_mib": peak, **{
            f"{m}_{k}": v for m, r in near.items() for k, v in r.items()}})
        print(f"| {count:,} | {count / wall:,.0f} | {peak:,.0f} | {ours['traces_per_s']:,.0f} | "
              f"{base['traces_per_s']:,.0f} | {ratio:.2f} | {_quality(ours)} | "
              f"{_quality(base)} | {ours['added_mib']:,.0f} | {base['added_mib']:,.0f} |",
              flush=True)
    largest = folders[max(sizes)]
    store = workdir / f"store-{max(sizes)}"
    wall, peak, _ = measure(["-m", "distill", "filter", "--traces", str(largest), "--store",
                             str(store), "--policy", str(ROOT / "data/policies/strict.yaml")])
    print()
    print(f"new policy on the scored {results[-1]['traces']:,} traces (no re-scoring): "
          f"{results[-1]['traces'] / wall:,.0f} traces/s, peak RSS {peak:,.0f} MiB")
    print(f"planted near-duplicates at the largest size: {results[-1]['ours_planted']:,}")
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"total bench time {time.perf_counter() - started:.1f} s")
    print(f"ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
