"""EvalResult files: what they are called, where they point, and how they are written.

A result names its eval set, its model folder and the model's run manifest by paths
*relative to the result file's own folder*, so a project moved (or copied) as a whole keeps
its lineage; readers (compare, lineage) resolve them against that folder. The file name is
built from the model and eval set names through the one name function
(``distill.core.formatting.plain``), never longer than the file system allows. The file is
written atomically, and a folder that cannot be written is one line naming it.
"""

from __future__ import annotations

from pathlib import Path

from distill.core.errors import file_system_error
from distill.core.formatting import NAME_MAX, plain
from distill.core.paths import relative_to, slug
from distill.core.shards import write_json_atomic
from distill.schemas import EvalResult

# An atomic write names its temp file ".<name>.tmp-<pid>" beside it: leave room for that.
_TEMP_ROOM = len("..tmp-") + 10


def result_file_name(result: EvalResult, eval_set_name: str) -> str:
    """``<model>-<eval set>-<mode>-<id>.json``; a name too long for a file keeps its start
    and ends with its hash."""
    tail = f"-{result.result_id[:8]}.json"
    stem = (f"{slug(result.model.name, max_chars=None)}-"
            f"{slug(eval_set_name, max_chars=None)}-{result.mode}")
    return plain(stem, "file", max_bytes=NAME_MAX - _TEMP_ROOM - len(tail)) + tail


def _relative_spec(spec: str, folder: Path) -> str:
    """An eval set spec (``DIR``, ``DIR:SPLIT`` or a JSONL file) relative to ``folder``."""
    if Path(spec).expanduser().exists():
        return relative_to(spec, folder)
    head, sep, split = spec.rpartition(":")
    if sep and head and Path(head).expanduser().exists():
        return f"{relative_to(head, folder)}:{split}"
    return spec


def portable(result: EvalResult, folder: Path) -> EvalResult:
    """The result with its paths relative to ``folder`` (where it will be written)."""
    model = result.model
    update = {}
    if model.path is not None and Path(model.path).expanduser().exists():
        update["path"] = relative_to(model.path, folder)
    if model.run_manifest is not None and Path(model.run_manifest).expanduser().exists():
        update["run_manifest"] = relative_to(model.run_manifest, folder)
    return result.model_copy(update={"model": model.model_copy(update=update),
                                     "eval_set": _relative_spec(result.eval_set, folder)})


def spec_candidates(result_path: Path, spec: str) -> list[str]:
    """Where a result's eval set spec may point: a relative spec is relative to the result
    file's folder (results written before paths were relative also name absolute ones)."""
    if Path(spec).is_absolute():
        return [spec]
    return [str(result_path.parent / spec)]


def write_result(result: EvalResult, out: Path, eval_set_name: str) -> Path:
    """Write ``result`` into the folder ``out``; returns the file's path."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        path = out / result_file_name(result, eval_set_name)
        write_json_atomic(path, portable(result, out))
    except OSError as exc:
        raise file_system_error(exc, "cannot write the eval result", out) from None
    return path
