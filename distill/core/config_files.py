"""Reading the YAML files users write: policies, prompts, teacher sets, train configs, model
specs, demo plans. One way for all of them: parse the YAML remembering the line of every key,
validate it with the file kind's pydantic model, and turn the first problem into an
``InputError`` that names the file, the line and the key, with a suggestion for a typo.

A file is found by path, or by bare name among the files shipped in its folder under data/
or prompts/; a missing file lists what ships, broken YAML names its line, and a key given
twice is an error (YAML would silently keep the last one).
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from distill.core.errors import InputError
from distill.core.text import MAX_DEPTH, check_depth, read_text

Where = tuple[str, ...]
M = TypeVar("M", bound=BaseModel)


class ConfigFile(BaseModel):
    """Base of the model of every config file and of its sections.

    Unknown keys are errors (a typo never silently loses a setting). ``key_noun`` is what
    the keys of this mapping are called in messages ("unknown condition 'maxx'");
    ``null_means_default`` lists keys that, left empty in YAML (``per_item:``), take their
    default rather than the value null.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    key_noun: ClassVar[str] = "key"
    null_means_default: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _drop_empty_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and cls.null_means_default:
            return {k: v for k, v in data.items()
                    if not (v is None and k in cls.null_means_default)}
        return data


class KeyProblem(Exception):  # noqa: N818 - not an error of ours to catch: pydantic lets it through
    """Raised by a validator for a problem at a key below the field it validates.

    pydantic locates a ``ValueError`` at the field whose validator raised it; a check that
    depends on several keys (a policy rule against its signal's kind) knows the exact key
    and raises this instead, with the full path from the top of the file.
    """

    def __init__(self, where: Where, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


@dataclass
class YamlDocument:
    """A parsed YAML file and the line of every key path in it."""

    data: Any
    path: Path | None
    lines: dict[Where, int] = field(default_factory=dict)
    # Keys whose value came from elsewhere (a command-line override): named in errors.
    origins: dict[Where, str] = field(default_factory=dict)

    def error(self, where: Where, message: str, reason: str = "bad_config") -> InputError:
        """An InputError at ``where``, or at the nearest enclosing key the file has: a check
        of ``rules.x.equals`` names ``rules.x`` when the file wrote ``x: value``."""
        while where and where not in self.lines and not isinstance(self.value_at(where[:-1]),
                                                                     dict):
            where = where[:-1]
        line, probe = None, where
        while line is None and probe:
            line = self.lines.get(probe)
            probe = probe[:-1]
        if where in self.origins:
            message += f" (from the {self.origins[where]})"
            line = None
        return InputError(message, file=self.path or "<config>", line=line,
                          field=".".join(where) or None, reason=reason)

    def value_at(self, where: Where) -> Any:
        """The data at a key path (None where the file has nothing)."""
        value = self.data
        for key in where:
            if isinstance(value, dict):
                value = value.get(key)
            elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                return None
        return value


def resolve_named(name_or_path: str | Path, folder: Path) -> Path:
    """``name`` -> ``folder/name.yaml``; anything with a suffix or that exists is a path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        return folder / f"{name_or_path}.yaml"
    return path


def read_yaml_file(name_or_path: str | Path, folder: Path, kind: str) -> YamlDocument:
    """The YAML of a named or given file, with the line of every key."""
    path = resolve_named(name_or_path, folder)
    if not path.exists():
        shipped = sorted(p.stem for p in folder.glob("*.yaml"))
        raise InputError(f"{kind} not found (shipped: {shipped})", file=path,
                         reason="missing_file")
    return parse_yaml(read_text(path, what=kind), path)


def parse_yaml(text: str, path: Path | None = None) -> YamlDocument:
    """Plain data from YAML text, noting each key's line; a key given twice is an error."""
    document = YamlDocument(data=None, path=path)
    where = path or "<config>"
    _refuse_deep_flow(text, where)
    try:
        loader = _DepthLimitedLoader(text)
    except yaml.YAMLError as exc:  # a character YAML does not allow (a NUL, a control)
        raise InputError(f"not valid YAML: {_one_line(exc)}", file=where,
                         reason="bad_yaml") from None
    try:
        node = loader.get_single_node()
        if node is not None:
            document.data = _to_python(node, (), document, loader, _Budget())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise InputError(f"not valid YAML: {_one_line(exc.problem or exc)}", file=where,
                         line=mark.line + 1 if mark is not None else None,
                         reason="bad_yaml") from None
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {_one_line(exc)}", file=where,
                         reason="bad_yaml") from None
    except _TooDeep as exc:
        raise InputError(f"nested more than {MAX_DEPTH} levels deep", file=where,
                         line=exc.line, reason="bad_yaml") from None
    finally:
        loader.dispose()
    return document


class _TooDeep(Exception):  # noqa: N818 - internal signal, turned into an InputError
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _DepthLimitedLoader(yaml.SafeLoader):
    """PyYAML's composer recurses once per nesting level, and its scanner slows down
    quadratically with open flow collections (``[`` * 3000 took 4 s, then raised
    RecursionError); stopping at ``MAX_DEPTH`` levels keeps both short."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark.line + 1)
            return super().compose_node(parent, index)  # type: ignore[misc]
        finally:
            self._depth -= 1


def _refuse_deep_flow(text: str, where: str | Path) -> None:
    """Refuse ``[[[[...`` before PyYAML sees it: its scanner reads ahead through every open
    flow collection, quadratically (3,000 brackets: 1 s even with the composer limited).
    Brackets inside quoted strings count too; no config nests 64 of them."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth = 0
    for number, line in enumerate(text.splitlines(), start=1):
        for char in line:
            if char in "[{":
                depth += 1
                if depth > MAX_DEPTH:
                    raise InputError(f"nested more than {MAX_DEPTH} levels deep", file=where,
                                     line=number, reason="bad_yaml")
            elif char in "]}":
                depth = max(depth - 1, 0)


def _one_line(problem: object) -> str:
    return " ".join(str(problem).split())


def yaml_value(text: str, where: str) -> Any:
    """One value given on the command line (``--set lr=1e-4``, ``--engine-option
    kwargs={a: 1}``), read by the same rules as a config file; errors name ``where``."""
    return parse_yaml(text, Path(where)).data


@dataclass
class _Budget:
    """How much of a document may still be built: aliases can repeat one node without end
    (a "billion laughs" file, or an alias inside itself), so nodes are counted."""

    nodes: int = 100_000

    def spend(self, node: yaml.Node, document: YamlDocument, depth: int) -> None:
        self.nodes -= 1
        where = document.path or "<config>"
        if self.nodes < 0:
            raise InputError("too many values (aliases repeating one node?); a config file "
                             "is small", file=where, line=node.start_mark.line + 1,
                             reason="bad_yaml")
        if depth > MAX_DEPTH:
            raise InputError(f"nested more than {MAX_DEPTH} levels deep", file=where,
                             line=node.start_mark.line + 1, reason="bad_yaml")


def _to_python(node: yaml.Node, where: Where, document: YamlDocument,
               loader: yaml.SafeLoader, budget: _Budget) -> Any:
    budget.spend(node, document, len(where))
    document.lines.setdefault(where, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise InputError("a key must be plain text, not a list or a mapping",
                                 file=document.path or "<config>", line=line,
                                 field=".".join(where) or None, reason="bad_config")
            key = _text_checked(str(loader.construct_object(key_node)), document, key_node)
            if key in out:
                first = document.lines[(*where, key)]
                raise InputError(f"duplicate key '{key}' (first given on line {first})",
                                 file=document.path or "<config>", line=line,
                                 field=".".join((*where, key)), reason="bad_config")
            document.lines[(*where, key)] = line
            out[key] = _to_python(value_node, (*where, key), document, loader, budget)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, (*where, str(index)), document, loader, budget)
                for index, item in enumerate(node.value)]
    value = loader.construct_object(node)
    return _text_checked(value, document, node) if isinstance(value, str) else value


def _text_checked(text: str, document: YamlDocument, node: yaml.Node) -> str:
    """YAML's escapes can spell half a UTF-16 pair ("\\ud800"): text that no UTF-8
    writer (a manifest, a hash) can write is refused where it was read."""
    check_depth(text, file=document.path or "<config>", line=node.start_mark.line + 1)
    return text


def validate(document: YamlDocument, model: type[M], data: Any = None) -> M:
    """``model`` from the document (or from ``data`` read out of it), every problem located."""
    if data is None:
        data = {} if document.data is None else document.data  # an empty file: all defaults
    try:
        return model.model_validate(data)
    except KeyProblem as problem:
        raise document.error(problem.where, problem.message) from None
    except ValidationError as exc:
        raise located_error(exc, document, model) from None


def load_config_file(name_or_path: str | Path, folder: Path, kind: str,
                     model: type[M]) -> tuple[M, Path]:
    """Read, parse and validate a config file of one kind; returns it and where it was."""
    document = read_yaml_file(name_or_path, folder, kind)
    return validate(document, model), document.path or Path(name_or_path)


def from_plain_data(data: Any, model: type[M], source: str = "<config>") -> M:
    """A config model from data that is not a file (a manifest's stored policy)."""
    return validate(YamlDocument(data=data, path=Path(source)), model)


# --- turning pydantic's first error into one located line -----------------------------------


def located_error(exc: ValidationError, document: YamlDocument, model: type[BaseModel],
                  prefix: Where = ()) -> InputError:
    """The first error of a failed validation, at its key in the file. ``prefix`` is where
    the validated part sits in the document (a section checked by a plugin's own model,
    like an engine's options)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = prefix + _data_path(first["loc"], document.value_at(prefix))
    message = _message(first, where[len(prefix):], document.value_at(prefix), model)
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error(s))"
    return document.error(where, message)


def _data_path(loc: tuple[Any, ...], data: Any) -> Where:
    """The keys of ``loc`` that exist in the data: pydantic adds union members
    ('bool', "literal['auto']") and markers ('[key]') that are no keys of the file."""
    where: list[str] = []
    current = data
    for index, part in enumerate(loc):
        if _has_key(current, part):
            current = current[part]
        elif not (isinstance(current, dict) and index == len(loc) - 1):
            continue  # a union member or a marker: no key of the file
        # else: a missing or unknown key, named but not walked into
        where.append(str(part))
    return tuple(where)


def _has_key(container: Any, part: Any) -> bool:
    if isinstance(container, dict):
        return part in container
    return isinstance(container, list) and isinstance(part, int) and 0 <= part < len(container)


def _message(error: dict[str, Any], where: Where, data: Any, model: type[BaseModel]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = _model_at(model, where[:-1])
        allowed = _field_names(parent) if parent else []
        noun = getattr(parent, "key_noun", "key")
        return (f"unknown {noun} '{where[-1]}'{did_you_mean(where[-1], allowed)}"
                + (f" (expected one of: {', '.join(allowed)})" if allowed else ""))
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
        given = error.get("input")
        return (f"must be one of {', '.join(expected)}, got {given!r}"
                f"{did_you_mean(str(given), expected)}")
    return str(error["msg"]).removeprefix("Value error, ")


def did_you_mean(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _model_at(model: type[BaseModel], where: Where) -> type[BaseModel] | None:
    """The config model that validates the mapping at ``where`` (None if no model does)."""
    current: Any = model
    for key in where:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = {info.alias or name: info for name, info in current.model_fields.items()}
            if key not in fields:
                return None
            current = fields[key].annotation
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        elif typing.get_origin(current) in (list, tuple):
            current = typing.get_args(current)[0]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` -> X."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return annotation
