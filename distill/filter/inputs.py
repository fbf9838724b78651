"""Reading what filter consumes: a generate folder (Trace shards + the Sample shards they
answer) and eval sets (Sample shards) for decontamination.

Trace shards mirror the Sample shards generate read (``traces/<split>/part-NNNNN.jsonl``
answers ``samples/<split>/part-NNNNN.jsonl`` of the ingest folder), so joining a trace
with its sample only ever needs one sample shard in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distill.core.errors import InputError
from distill.core.shards import read_json_model
from distill.schemas import ShardRef, StageManifest, file_sha256


@dataclass(frozen=True)
class ShardPair:
    """One trace shard and the sample shard it answers."""

    trace_ref: ShardRef  # name relative to the generate folder
    trace_path: Path
    sample_path: Path
    sample_sha256: str

    @property
    def split(self) -> str:
        return self.trace_ref.split


@dataclass(frozen=True)
class GenerateInput:
    root: Path
    manifest: StageManifest
    image_root: Path | None
    shards: list[ShardPair]
    rejects: list[Path]

    @property
    def total_traces(self) -> int:
        return sum(pair.trace_ref.rows for pair in self.shards)


def _resolve(base: Path, value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    return (path if path.is_absolute() else base / path).resolve()


def read_stage_manifest(root: Path, stage: str, reader: str) -> StageManifest:
    """The manifest of a finished ``distill STAGE`` folder; a missing one (the run never
    finished) or another stage's is one located line telling ``reader``'s user what to do."""
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"no manifest.json: not a finished {stage} folder (run `distill "
                         f"{stage}` to completion first; it resumes where it stopped)",
                         file=manifest_path, reason="missing_file")
    manifest = read_json_model(manifest_path, StageManifest)
    if manifest.stage != stage:
        raise InputError(f"this is a '{manifest.stage}' folder; {reader} reads the output of "
                         f"`distill {stage}`", file=manifest_path, field="stage",
                         reason="wrong_stage")
    return manifest


def open_generate_dir(root: Path | str) -> GenerateInput:
    """Read a finished generate folder's manifest and pair its shards with sample shards.

    Every file is checked against the hash its manifest recorded, so a dataset version
    names exactly the bytes it was built from.
    """
    root = Path(root)
    manifest_path = root / "manifest.json"
    manifest = read_stage_manifest(root, "generate", "filter")
    input_dir = _resolve(root, manifest.input_dir)
    if input_dir is None:
        raise InputError("the generate manifest does not name its input folder",
                         file=manifest_path, field="input_dir", reason="schema_error")
    known_samples = {ref.name: ref for ref in manifest.inputs}
    pairs = []
    for ref in sorted(manifest.shards, key=lambda r: r.name):
        if not ref.in_folder("traces"):
            raise InputError(f"trace shard {ref.name!r} is not traces/<split>/<file>",
                             file=manifest_path, field="shards", reason="schema_error")
        sample_name = ref.beside("samples")
        sample_path = input_dir / sample_name
        if not sample_path.is_file():
            raise InputError(f"the sample shard that {ref.name} answers is missing "
                             f"(input_dir is {input_dir})", file=sample_path,
                             reason="missing_file")
        known = known_samples.get(sample_name)
        pairs.append(ShardPair(ref, root / ref.name, sample_path,
                               known.sha256 if known else ""))
    image_root = _resolve(root, manifest.image_root)
    if image_root is None:
        ingest_manifest = input_dir / "manifest.json"
        if ingest_manifest.is_file():
            ingest = read_json_model(ingest_manifest, StageManifest)
            image_root = _resolve(input_dir, ingest.image_root)
    rejects = [root / ref.name for ref in manifest.rejects]
    return GenerateInput(root, manifest, image_root, pairs, rejects)


def verify_files(generate: GenerateInput) -> list[ShardPair]:
    """Check every trace and sample shard against its recorded sha256.

    Returns the pairs with each sample shard's hash filled in (older manifests may not
    list their inputs)."""
    checked = []
    for pair in generate.shards:
        if not pair.trace_path.is_file():
            raise InputError("trace shard listed in the manifest is missing",
                             file=pair.trace_path, reason="missing_file")
        if file_sha256(pair.trace_path) != pair.trace_ref.sha256:
            raise InputError("trace shard changed since generate wrote it (sha256 differs "
                             "from its manifest)", file=pair.trace_path, reason="input_changed")
        digest = file_sha256(pair.sample_path)
        if pair.sample_sha256 and digest != pair.sample_sha256:
            raise InputError("sample shard changed since generate read it (sha256 differs "
                             "from the generate manifest)", file=pair.sample_path,
                             reason="input_changed")
        checked.append(ShardPair(pair.trace_ref, pair.trace_path, pair.sample_path, digest))
    return checked
