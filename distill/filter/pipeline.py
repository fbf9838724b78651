"""`distill filter`: score trace shards, select with a policy, dedup, decontaminate,
publish an immutable dataset version.

The run, with what makes it restartable:

1. check every input file against its manifest hash;
2. score each input shard into a cache entry (``distill.filter.score``) -- on the local
   executor or Ray; finished entries are reused, so a killed run resumes per shard and a
   new policy re-scores nothing;
3. selection pass 1: rules, splits, contamination per shard; the survivors' dedup keys
   (and the parent version's) are spilled to disk (``distill.filter.dedup``);
4. resolve duplicate groups;
5. selection pass 2: dedup verdicts, the per-item cap, and the version's shards, written
   into a temp folder;
6. name the version by the hash of its content, write manifest and report, rename the
   folder into ``versions/``. Steps 3-6 are cheap and redone from scratch after a crash.

Memory is bounded by one shard (plus a few bytes per trace in numpy arrays), never by
the whole input.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from distill.core.config_files import did_you_mean
from distill.core.errors import DistillError, InputError
from distill.core.evalsets import EvalSet, load_eval_set
from distill.core.executors import Executor, RayOptions, map_shards
from distill.core.folders import STORE_MARKER, claim_output, output_kind
from distill.core.locks import LOCK_NAME
from distill.core.paths import relative_to
from distill.core.progress import progress_bar
from distill.core.shards import (
    ShardWriter,
    iter_records,
    link_or_copy,
    shard_name,
    write_json_atomic,
)
from distill.filter.decontam import build_eval_index
from distill.filter.dedup import (
    DuplicateFinder,
    Duplicates,
    exact_keys,
    partitions_for,
    read_rows,
)
from distill.filter.inputs import GenerateInput, open_generate_dir, verify_files
from distill.filter.judgements import JudgeInput, open_judge_dir
from distill.filter.minhash import VERSION as MINHASH_VERSION
from distill.filter.minhash import MinHasher, band_keys, has_words, lsh_params
from distill.filter.policy import Policy
from distill.filter.report import KEPT_BY_TEACHER, RunStats, kept_by_teacher, write_report
from distill.filter.score import (
    JSON_COMPACT,
    ScoreTask,
    ShardScorer,
    cache_key,
    read_entry_summary,
    save_npy,
)
from distill.filter.scorers import DEFAULT_REFUSALS, ScorerSuite, load_refusal_phrases
from distill.filter.select import STAGE_VERSIONS, CacheEntry, LengthStats, Selector
from distill.filter.store import IMAGE_ROOT_FROM_VERSION, DatasetStore
from distill.schemas import DatasetManifest, Rejection, ScoredTrace, ShardRef, file_sha256
from distill.schemas.dataset_manifest import eval_set_label, version_id

INDEX_FORMAT = "1"


def index_dtype(num_perm: int) -> np.dtype:
    return np.dtype([("trace_key", "u1", (32,)), ("text_hash", "<u8"), ("salt", "<u8"),
                     ("sig", "<u4", (num_perm,))])


@dataclass
class FilterOptions:
    traces: Path
    store: Path
    policy: Policy
    parent: str | None = None
    eval_sets: list[str | Path] = field(default_factory=list)  # eval set specs
    report_dir: Path | None = None
    executor: Executor = "local"
    on_error: str = "fail"
    refusals: Path | None = None
    judgements: Path | None = None  # a `distill judge` folder of these traces
    wait: bool = False  # wait for another run on the same store instead of exiting
    allow_empty: bool = False  # publish a version that keeps no trace (else refuse)
    ray: RayOptions = field(default_factory=RayOptions)


@dataclass
class FilterResult:
    version: str
    manifest: DatasetManifest
    created: bool
    scored_shards: int
    reused_shards: int
    report: Path
    stats: RunStats


def run_filter(options: FilterOptions) -> FilterResult:
    store = DatasetStore(claim_store(options))
    with store.lock(wait=options.wait):
        (store.root / STORE_MARKER).touch()  # a folder claimed as a store stays one
        store.clean_leftovers()
        store.break_pool_links()
        try:
            return _Run(options, store).run()
        finally:
            shutil.rmtree(store.tmp_dir, ignore_errors=True)


def claim_store(options: FilterOptions) -> Path:
    """The store's folder, refused when it is not one: a store keeps and cleans its own
    ``tmp/`` and ``cache/``, so a user's folder that happens to hold a ``tmp/`` must
    never be taken for one. A new or empty folder becomes a store (marked by
    ``STORE_MARKER`` under the lock); the traces and judgements folders are never the
    store."""
    inputs = [options.traces, *([options.judgements] if options.judgements else [])]
    root = claim_output(options.store, "filter", input_folders=inputs, option="--store")
    held = sorted(entry.name for entry in root.iterdir() if entry.name != LOCK_NAME) \
        if root.is_dir() else []
    if held and output_kind(root) != "filter":
        found = ", ".join(held[:5])
        raise DistillError(f"--store {options.store} is not a dataset store and is not "
                           f"empty: it holds {found}; give a new folder or an existing store")
    return root


class _Run:
    def __init__(self, options: FilterOptions, store: DatasetStore) -> None:
        self.options = options
        self.policy = options.policy
        self.store = store
        self.hasher = MinHasher()
        phrases = load_refusal_phrases(options.refusals or DEFAULT_REFUSALS)
        self.phrases = tuple(phrases)
        self.suite = ScorerSuite(phrases)
        self.scorer_versions = {
            **self.suite.versions,
            "minhash": f"{MINHASH_VERSION}/perm{self.hasher.num_perm}/"
                       f"shingle{self.hasher.shingle_words}",
            **STAGE_VERSIONS,
        }
        self.bands, self.rows = lsh_params(self.policy.dedup.threshold, self.hasher.num_perm)
        self.notes: list[str] = []

    # --- the steps -----------------------------------------------------------------------

    def run(self) -> FilterResult:
        generate = open_generate_dir(self.options.traces)
        pairs = verify_files(generate)
        self._check_splits(generate)
        judge = open_judge_dir(self.options.judgements, generate.root) \
            if self.options.judgements is not None else None
        parent = self.store.open(self.options.parent, everything=True)[0] \
            if self.options.parent else None
        eval_sets = [load_eval_set(spec) for spec in self.options.eval_sets]
        entries, scored, reused = self._score(generate, pairs, judge)
        self._check_rejects(entries)
        self._check_teachers(entries, parent)
        eval_index = build_eval_index(eval_sets, self.policy.decontamination) \
            if eval_sets else None
        if eval_index is not None:
            self.notes.append(f"eval sets: {eval_index.items:,} items; {eval_index.templates} "
                              "question template(s) left out of text matching")
        selector = Selector(self.policy, LengthStats([e.summary for e in entries]), eval_index,
                            self.hasher.num_perm)
        staging = self.store.new_tmp("version")
        work = self.store.new_tmp("work")
        parent_parts = self._parent_parts(parent)
        duplicates, trace_keys = self._find_duplicates(entries, selector, parent_parts, work)
        selection = _Selection(selector, parent, parent_parts, eval_sets, duplicates,
                               trace_keys, RunStats())
        self._count_inputs(generate, entries, selection.stats)
        outputs = self._write_version(entries, selection, staging)
        self._check_not_empty(outputs, selection.stats)
        manifest = self._manifest(generate, pairs, outputs, selection)
        write_json_atomic(staging / "manifest.json", manifest)
        self.notes.append(f"scoring: {scored} shard(s) scored, {reused} reused from the cache")
        report = write_report(staging / "report", manifest, selection.stats, self.notes,
                              trace_dir=generate.root.resolve())
        if self.options.report_dir is not None:
            shutil.copytree(staging / "report", self.options.report_dir, dirs_exist_ok=True)
        created = self.store.publish(staging, manifest.version)
        if not created:
            manifest = self.store.manifest(manifest.version)
        report = self.store.version_dir(manifest.version) / "report" / report.name
        return FilterResult(manifest.version, manifest, created, scored, reused, report,
                            selection.stats)

    def _score(self, generate: GenerateInput, pairs: list, judge: JudgeInput | None
               ) -> tuple[list[CacheEntry], int, int]:
        tasks = []
        for pair in pairs:
            shard = judge.for_trace_shard(pair.trace_ref.name) if judge else None
            tasks.append(ScoreTask(
                pair=pair, store_root=self.store.root, image_root=generate.image_root,
                key=cache_key(pair, self.suite.versions, self.hasher.config, shard),
                refusal_phrases=self.phrases, num_perm=self.hasher.num_perm,
                shingle_words=self.hasher.shingle_words, on_error=self.options.on_error,
                judge=shard))
        if judge is not None:
            rubric, same = (j.judge_id if j else "-" for j in (judge.rubric, judge.same_answer))
            self.notes.append(f"judgements: {judge.root} (rubric judge {rubric}, free-text "
                              f"answers judge {same})")
        todo = [task for task in tasks if read_entry_summary(task.entry_dir) is None]
        self.store.cache_dir.mkdir(parents=True, exist_ok=True)
        with progress_bar("score", total=sum(t.pair.trace_ref.rows for t in todo),
                          unit="traces") as bar:
            for summary in map_shards(ShardScorer, todo, executor=self.options.executor,
                                      ray=self.options.ray):
                bar.advance(summary["rows"] + summary["rejected"])
        entries = []
        for task in tasks:
            summary = read_entry_summary(task.entry_dir)
            if summary is None:  # a Ray worker died without raising
                raise DistillError(f"scoring {task.pair.trace_ref.name} did not finish")
            entries.append(CacheEntry(task.entry_dir, task.pair.trace_ref.name, summary))
        return entries, len(todo), len(tasks) - len(todo)

    def _check_rejects(self, entries: list[CacheEntry]) -> None:
        """With --on-error fail, an entry scored earlier under 'skip' still fails here."""
        if self.options.on_error != "fail":
            return
        for entry in entries:
            if entry.summary["rejected"]:
                first = next(iter_records(entry.path / "rejects.jsonl", Rejection))
                where = f"field '{first.field}': " if first.field else ""
                raise DistillError(f"{first.location}: {where}{first.message} (use --on-error "
                                   "skip to set bad lines aside in the version's rejects.jsonl)")

    # --- the policy against its input ----------------------------------------------------

    def _policy_problem(self, field: str, message: str) -> InputError:
        return InputError(message, file=self.policy.source, field=field, reason="config_error")

    def _check_splits(self, generate: GenerateInput) -> None:
        """A policy's splits must name splits of the input: ``splits: [trian]`` would keep
        nothing and say nothing."""
        if self.policy.splits is None:
            return
        present = sorted({ref.split for ref in generate.manifest.shards})
        for split in self.policy.splits:
            if split not in present:
                raise self._policy_problem("splits", (
                    f"{split!r} is not a split of the input {generate.root} (it holds "
                    f"{', '.join(present) or 'no trace shards'}){did_you_mean(split, present)}"))

    def _check_teachers(self, entries: list[CacheEntry], parent: str | None) -> None:
        """``per_item.teacher_preference`` must name teachers of the input (or of the
        parent version): a misspelt one would silently rank last."""
        wanted = self.policy.per_item.teacher_preference
        if not wanted:
            return
        present = {teacher for entry in entries for teacher in entry.summary["teachers"]}
        if parent is not None:
            present.update(self.store.manifest(parent).teachers)
        for teacher in wanted:
            if teacher not in present:
                raise self._policy_problem("per_item.teacher_preference", (
                    f"{teacher!r} is not a teacher of the input (teachers: "
                    f"{', '.join(sorted(present)) or 'none'}){did_you_mean(teacher, present)}"))

    def _check_not_empty(self, outputs: _Outputs, stats: RunStats) -> None:
        """A version that keeps nothing is published only when asked for (--allow-empty):
        it is almost always a policy that does not fit its input."""
        if self.options.allow_empty or outputs.parent_rows + stats.verdicts["keep"] > 0:
            return
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in
                            stats.primary_reasons.most_common(4)) or "no input traces"
        raise DistillError(f"the policy {self.policy.name!r} keeps none of the "
                           f"{stats.verdicts['drop']:,} input traces (dropped by {reasons}); "
                           "nothing is published (pass --allow-empty to publish an empty "
                           "version)")

    # --- dedup -------------------------------------------------------------------------

    def _parent_parts(self, parent: str | None) -> list[Path]:
        if parent is None:
            return []
        folder = self.store.version_dir(parent)
        index = json.loads((folder / "index" / "index.json").read_text(encoding="utf-8"))
        if index["minhash"] != self.hasher.config or index["format"] != INDEX_FORMAT:
            raise DistillError(f"parent version {parent[:12]} was indexed with other MinHash "
                               "settings; rebuild it with this version of distill")
        return [folder / "index" / ref["name"] for ref in index["parts"]]

    def _keys(self, text_hash: np.ndarray, salt: np.ndarray, signatures: np.ndarray
              ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
        """(exact keys, band keys, rows that have band keys) under the policy's dedup."""
        dedup = self.policy.dedup
        scope = salt if dedup.scope == "image" else None
        exact = exact_keys(text_hash, scope) if dedup.exact else None
        rows = np.flatnonzero(has_words(signatures)) if dedup.near else np.empty(0, np.int64)
        bands = band_keys(signatures[rows], self.bands, self.rows,
                          None if scope is None else scope[rows]) if len(rows) else None
        return exact, bands, rows

    def _find_duplicates(self, entries: list[CacheEntry], selector: Selector,
                         parent_parts: list[Path], work: Path) -> tuple[Duplicates, _TraceKeys]:
        parent_rows = sum(len(np.load(p, mmap_mode="r")) for p in parent_parts)
        capacity = max(1, parent_rows + sum(e.summary["rows"] for e in entries))
        partitions = partitions_for(capacity * (self.bands + 1))
        finder = DuplicateFinder(work / "keys", partitions=partitions,
                                 threshold=self.policy.dedup.threshold)
        trace_keys = _TraceKeys(work / "trace_keys.bin")
        ordinal = 0
        for part in parent_parts:
            arrays = np.load(part)
            ordinal = self._add(finder, trace_keys, ordinal, arrays["trace_key"],
                                arrays["text_hash"], arrays["salt"], arrays["sig"])
        with progress_bar("select", total=len(entries), unit="shards") as bar:
            for entry in entries:
                decision = selector.decide(entry)
                survivors = decision.survivors
                keys = decision.keys[survivors]
                hex_keys = [decision.rows[i]["trace_key"] for i in survivors]
                key_bytes = np.frombuffer(b"".join(bytes.fromhex(k) for k in hex_keys),
                                          dtype=np.uint8).reshape(-1, 32)
                ordinal = self._add(finder, trace_keys, ordinal, key_bytes, keys["text_hash"],
                                    keys["salt"], keys["sig"])
                bar.advance()
        return finder.resolve(ordinal), trace_keys

    def _add(self, finder: DuplicateFinder, trace_keys: _TraceKeys, ordinal: int,
             key_bytes: np.ndarray, text_hash: np.ndarray, salt: np.ndarray,
             signatures: np.ndarray) -> int:
        count = len(text_hash)
        if count == 0:
            return ordinal
        ordinals = np.arange(ordinal, ordinal + count, dtype=np.int64)
        trace_keys.append(key_bytes)
        exact, bands, rows = self._keys(text_hash, salt, signatures)
        finder.add_signatures(signatures)
        finder.add(ordinals, exact=exact)
        if bands is not None:
            finder.add(ordinals[rows], bands=bands)
        return ordinal + count

    # --- the version ----------------------------------------------------------------------

    def _write_version(self, entries: list[CacheEntry], selection: _Selection,
                       staging: Path) -> _Outputs:
        outputs = _Outputs(staging, self.hasher.num_perm)
        if selection.parent is not None:
            outputs.link_parent(self.store.version_dir(selection.parent), selection.parent_parts)
        ordinal = outputs.parent_rows
        with progress_bar("write", total=len(entries), unit="shards") as bar:
            for entry in entries:
                outputs.entry_summaries.append(entry.summary)
                ordinal = self._write_shard(entry, selection, outputs, ordinal)
                bar.advance()
        outputs.close(selection.duplicates, self.hasher.config)
        outputs.copy_rejects(entries)
        return outputs

    def _write_shard(self, entry: CacheEntry, selection: _Selection, outputs: _Outputs,
                     ordinal: int) -> int:
        """Pass 2 for one input shard: dedup verdicts, the per-item cap, its scored shard
        and its kept rows; returns the next survivor ordinal."""
        decision = selection.selector.decide(entry)
        duplicates, stats = selection.duplicates, selection.stats
        reasons = [list(r) for r in decision.reasons]
        dedup: dict[int, tuple[str, str]] = {}
        ordinals = np.arange(ordinal, ordinal + len(decision.survivors))
        representatives = duplicates.representative[ordinals]
        repeated = np.flatnonzero(representatives != ordinals)
        of_keys = selection.trace_keys.lookup(representatives[repeated])
        for position, of in zip(repeated.tolist(), of_keys, strict=True):
            index = decision.survivors[position]
            kind = "exact" if duplicates.exact[ordinals[position]] else "near"
            dedup[index] = (kind, of)
            reasons[index].append(f"duplicate:{kind}")
            outputs.cluster(decision.rows[index], kind, of,
                            int(representatives[position]) < outputs.parent_rows)
        ordinal += len(decision.survivors)
        unique = [i for i in decision.survivors if i not in dedup]
        for index in selection.selector.apply_item_cap(decision, unique):
            reasons[index].append("per_item_cap")
        lines = entry.row_lines()
        scored = outputs.shard_writer(entry.output_name)
        kept: list[int] = []
        kept_items: dict[str, str] = {}
        for index in decision.order:
            kind, of = dedup.get(index, ("none", ""))
            derived = {**decision.derived[index], "duplicate": kind, "duplicate_of": of}
            verdict = "drop" if reasons[index] else "keep"
            line = _scored_line(lines[index], derived, verdict, reasons[index])
            scored.write_line(line)
            row = decision.rows[index]
            if verdict == "keep":
                outputs.keep(line)
                kept.append(index)
                kept_items[row["sample_id"]] = str(row["signals"].get("label_source", "gold"))
            stats.add(row, verdict, reasons[index])
        stats.kept_items.update(kept_items.values())
        outputs.commit_shard(entry.output_name, decision.keys[kept],
                             [decision.rows[i]["trace_key"] for i in kept])
        return ordinal

    def _count_inputs(self, generate: GenerateInput, entries: list[CacheEntry],
                      stats: RunStats) -> None:
        """Rejected lines (of filter and of generate) and items by label source."""
        for entry in entries:
            stats.rejects.update(entry.summary.get("reject_reasons", {}))
            stats.add_labels(entry.summary)
        for path in generate.rejects:
            if path.is_file():
                stats.generate_rejects.update(r.reason for r in iter_records(path, Rejection))

    def _manifest(self, generate: GenerateInput, pairs: list, outputs: _Outputs,
                  selection: _Selection) -> DatasetManifest:
        parent, stats = selection.parent, selection.stats
        inputs = [pair.trace_ref for pair in pairs]
        teachers, prompts = set(), {}
        for entry_summary in outputs.entry_summaries:
            teachers.update(entry_summary["teachers"])
            prompts.update(entry_summary["prompts"])
        # the version's rows by the teacher that wrote them, its parent's rows included:
        # what share of a later round's data each source (a student among them) holds
        by_teacher = Counter({t: c["keep"] for t, c in stats.teachers.items() if c["keep"]})
        if parent is not None:
            parent_manifest = self.store.manifest(parent)
            teachers.update(parent_manifest.teachers)
            prompts = {**parent_manifest.prompts, **prompts}
            by_teacher.update(kept_by_teacher(parent_manifest))
        labels = [eval_set_label(s.hash, s.spec) for s in selection.eval_sets]
        counts = {
            "input_traces": stats.verdicts["keep"] + stats.verdicts["drop"],
            "keep": stats.verdicts["keep"],
            "drop": stats.verdicts["drop"],
            "kept_parent": outputs.parent_rows,
            "kept": outputs.parent_rows + stats.verdicts["keep"],
            "rejected": sum(stats.rejects.values()),
            "generate_rejects": sum(stats.generate_rejects.values()),
            "duplicate_groups": selection.duplicates.groups,
            **{f"correctness:{k}": v for k, v in sorted(stats.correctness.items())},
            **{f"items:label_{k}": v for k, v in sorted(stats.items.items())},
            **{f"kept_items:label_{k}": v for k, v in sorted(stats.kept_items.items())},
            **{f"items_unlabeled:{k}": v for k, v in sorted(stats.unlabeled.items())},
            **{f"{KEPT_BY_TEACHER}{k}": v for k, v in sorted(by_teacher.items())},
        }
        identity = {"parent": parent, "inputs": inputs, "policy_hash": self.policy.hash,
                    "scorer_versions": self.scorer_versions, "eval_sets": labels,
                    "shards": outputs.data_refs, "scored_shards": outputs.scored_refs}
        version = version_id(**identity)
        # Paths relative to the version's own folder: lineage follows them in a moved project.
        trace_dir = relative_to(generate.root, self.store.version_dir(version))
        return DatasetManifest(
            version=version, parent=parent, created_at=datetime.now(UTC),
            trace_dir=trace_dir, image_root=IMAGE_ROOT_FROM_VERSION,
            inputs=inputs, policy=self.policy.as_dict(), policy_hash=self.policy.hash,
            scorer_versions=self.scorer_versions, teachers=sorted(teachers), prompts=prompts,
            eval_sets=labels, counts=counts, drop_reasons=dict(stats.primary_reasons),
            shards=outputs.data_refs, scored_shards=outputs.scored_refs)


@dataclass
class _Selection:
    """What selection pass 1 found, which pass 2 (writing the version) and the manifest use."""

    selector: Selector
    parent: str | None
    parent_parts: list[Path]
    eval_sets: list[EvalSet]
    duplicates: Duplicates
    trace_keys: _TraceKeys
    stats: RunStats


class _TraceKeys:
    """Trace keys by ordinal, in a file: appended in order, read back a few at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        path.touch()

    def append(self, key_bytes: np.ndarray) -> None:
        with open(self.path, "ab") as handle:
            np.ascontiguousarray(key_bytes, dtype=np.uint8).tofile(handle)
        self.rows += len(key_bytes)

    def lookup(self, ordinals: np.ndarray) -> list[str]:
        if len(ordinals) == 0:
            return []
        with open(self.path, "rb") as handle:
            keys = read_rows(handle, ordinals, np.dtype((np.uint8, (32,))))
        return [bytes(row).hex() for row in keys]


def _scored_line(cached: str, derived: dict, verdict: str, reasons: list[str]) -> str:
    """A ScoredTrace line from a cached row (which ends with its signals object) without
    parsing the row again: append the run-level signals, the verdict and the reasons."""
    if not cached.endswith("}}"):
        raise DistillError("scoring cache row is malformed; delete STORE/cache and rerun")
    extra = json.dumps(derived, **JSON_COMPACT)[1:-1]
    return (cached[:-2] + "," + extra + '},"verdict":"' + verdict + '","reasons":'
            + json.dumps(reasons, **JSON_COMPACT) + "}")


class _Outputs:
    """The files of the version being built, in its staging folder."""

    def __init__(self, staging: Path, num_perm: int) -> None:
        self.staging = staging
        self.num_perm = num_perm
        self.data_refs: list[ShardRef] = []
        self.scored_refs: list[ShardRef] = []
        self.index_refs: list[ShardRef] = []
        self.entry_summaries: list[dict] = []
        self.parent_rows = 0
        self._scored: ShardWriter | None = None
        self._data: ShardWriter | None = None
        self._clusters = ShardWriter(staging / "dedup" / "clusters.jsonl")

    def link_parent(self, parent_dir: Path, parts: list[Path]) -> None:
        manifest = DatasetManifest.model_validate_json(
            (parent_dir / "manifest.json").read_text(encoding="utf-8"))
        for ref, part in zip(manifest.shards, parts, strict=True):
            index = len(self.data_refs)
            target = self.staging / "data" / shard_name(index)
            link_or_copy(parent_dir / ref.name, target)
            link_or_copy(part, self.staging / "index" / f"part-{index:05d}.npy")
            self.data_refs.append(ShardRef(name=f"data/{shard_name(index)}", sha256=ref.sha256,
                                           rows=ref.rows))
            self.index_refs.append(ShardRef(name=f"part-{index:05d}.npy",
                                            sha256=file_sha256(part), rows=ref.rows))
            self.parent_rows += ref.rows

    def shard_writer(self, name: str) -> ShardWriter:
        self._scored = ShardWriter(self.staging / name, flush_every=1 << 30,
                                   flush_seconds=math.inf)
        return self._scored

    def keep(self, line: str) -> None:
        if self._data is None:
            target = self.staging / "data" / shard_name(len(self.data_refs))
            self._data = ShardWriter(target, flush_every=1 << 30, flush_seconds=math.inf)
        self._data.write_line(line)

    def cluster(self, row: dict, kind: str, of: str, of_parent: bool) -> None:
        self._clusters.write_line(json.dumps({
            "trace_key": row["trace_key"], "duplicate_of": of, "kind": kind,
            "sample_id": row["sample_id"], "teacher_id": row["teacher_id"],
            "of_parent_version": of_parent}, **JSON_COMPACT))

    def commit_shard(self, name: str, kept_keys: np.ndarray, trace_keys: list[str]) -> None:
        """Finish one input shard: its scored shard, and its data + index shards if any
        trace was kept (the index holds the kept traces' dedup keys for child versions)."""
        assert self._scored is not None
        ref = self._scored.commit()
        self.scored_refs.append(ref.model_copy(update={"name": name}))
        self._scored = None
        if self._data is None:
            return
        ref = self._data.commit()
        index = len(self.data_refs)
        self.data_refs.append(ref.model_copy(update={"name": f"data/{shard_name(index)}"}))
        self._data = None
        rows = np.zeros(len(trace_keys), dtype=index_dtype(self.num_perm))
        rows["trace_key"] = np.frombuffer(b"".join(bytes.fromhex(k) for k in trace_keys),
                                          dtype=np.uint8).reshape(-1, 32)
        for name_ in ("text_hash", "salt", "sig"):
            rows[name_] = kept_keys[name_]
        path = self.staging / "index" / f"part-{index:05d}.npy"
        save_npy(path, rows)
        self.index_refs.append(ShardRef(name=path.name, sha256=file_sha256(path),
                                        rows=len(rows)))

    def copy_rejects(self, entries: list[CacheEntry]) -> None:
        """Lines that could not be scored (--on-error skip) go into the version, too."""
        sources = [e.path / "rejects.jsonl" for e in entries if e.summary["rejected"]]
        if not sources:
            return
        writer = ShardWriter(self.staging / "rejects.jsonl")
        for source in sources:
            with open(source, encoding="utf-8") as handle:
                for line in handle:
                    writer.write_line(line.rstrip("\n"))
        writer.commit()

    def close(self, duplicates: Duplicates, minhash: dict) -> None:
        self._clusters.commit()
        (self.staging / "index").mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.staging / "index" / "index.json", {
            "format": INDEX_FORMAT, "minhash": minhash,
            "parts": [ref.model_dump(mode="json") for ref in self.index_refs]})


def iter_version(store: DatasetStore, version: str) -> Iterator[ScoredTrace]:
    """Every kept record of a version, validated."""
    manifest = store.manifest(version)
    for ref in manifest.shards:
        yield from iter_records(store.version_dir(version) / ref.name, ScoredTrace)

