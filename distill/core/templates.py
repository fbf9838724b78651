"""The one place templates are rendered: a Jinja sandbox, because a template is data.

Prompt files, judge rubrics and teacher sets are what people share with each other, so a
template from a file must never run code. A plain ``jinja2.Environment`` lets
``{{ cycler.__init__.__globals__.os.popen('id').read() }}`` run a shell command; every
template the toolkit renders itself goes through ``sandboxed_environment`` instead:

- Jinja's ``ImmutableSandboxedEnvironment``: no attribute starting with ``_`` (no
  ``__class__``, ``__globals__``, ``__subclasses__``), no ``str.format`` escapes, no
  method that mutates a list or dict, ``range`` capped;
- no globals at all (``cycler``, ``joiner``, ``lipsum``, ``namespace``, ``range``,
  ``dict``): a prompt needs only its placeholders, and each global is a way in;
- ``**`` refused and ``*`` bounded, so ``{{ "a" * 10**10 }}`` cannot take the machine's
  memory (Jinja folds constants when it compiles: a bomb would go off at load time).

Chat templates are rendered by transformers (``apply_chat_template``) and by vLLM through
transformers, both in their own ``ImmutableSandboxedEnvironment``; the toolkit's tests
check that a payload in a student folder's chat template fails there too.

``check_template`` and ``check_renders`` are the load-time half: the first parses the
template and refuses any use of a name starting with ``_`` with its line, the second renders
it with harmless values, so a payload fails when its file is loaded, naming the file, not
halfway through a run.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

# A rendered prompt longer than this is a mistake or an attack, never a prompt.
MAX_REPEAT_CHARS = 1_000_000

TEMPLATE_ERRORS = (jinja2.TemplateError, SecurityError, TypeError, ValueError, ArithmeticError,
                 OverflowError, RecursionError, MemoryError, AttributeError, LookupError)
"""What rendering a hostile or broken template can raise: each is reported in one line."""


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with arithmetic that cannot exhaust memory."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            raise SecurityError("the power operator is not allowed in a template")
        if operator_name == "*":
            sized = left if isinstance(left, str | list | tuple) else right
            count = right if sized is left else left
            if isinstance(sized, str | list | tuple) and isinstance(count, int) and \
                    len(sized) * count > MAX_REPEAT_CHARS:
                raise SecurityError(f"a repetition longer than {MAX_REPEAT_CHARS:,} "
                                    "is not allowed in a template")
            return operator.mul(left, right)
        return super().call_binop(context, operator_name, left, right)


def sandboxed_environment(**options: Any) -> jinja2.Environment:
    """A sandboxed Jinja environment with no globals (see the module docstring); options
    are Jinja's (``autoescape``, ``trim_blocks``, ...). Undefined names are errors."""
    options.setdefault("undefined", jinja2.StrictUndefined)
    environment = _Sandbox(**options)
    environment.globals.clear()
    return environment


def placeholders(environment: jinja2.Environment, source: str) -> set[str]:
    """The names a template reads from its context (a syntax error raises)."""
    return set(jinja2.meta.find_undeclared_variables(environment.parse(source)))


def check_template(environment: jinja2.Environment, source: str) -> None:
    """Refuse a template that does not parse or reaches for internals: ``ValueError`` with
    a one-line reason (the syntax error, or the name starting with ``_`` and its line)."""
    try:
        tree = environment.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error on its line {exc.lineno}: "
                         f"{exc.message}") from None
    for node in tree.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem,
                               jinja2.nodes.Const, jinja2.nodes.Name)):
        name = _reached_name(node)
        if name is not None and name.startswith("_"):
            raise ValueError(f"the template reaches for {name!r} on its line {node.lineno}: "
                             "a template may only show its placeholders' values")


def check_renders(environment: jinja2.Environment, source: str,
                  probes: Iterable[Mapping[str, Any]]) -> None:
    """Render the template with each set of harmless values: ``ValueError`` with what the
    sandbox (or the template itself) refused, so it fails at load time, not mid-run."""
    template = environment.from_string(source)
    try:
        for probe in probes:
            template.render(**probe)
    except TEMPLATE_ERRORS as exc:
        raise ValueError(f"the template fails when rendered: {one_line(exc)}") from None


def render(template: jinja2.Template, values: Mapping[str, Any], what: str) -> str:
    """Render ``template``; any failure becomes a ``ValueError`` naming ``what``."""
    try:
        return template.render(**values)
    except TEMPLATE_ERRORS as exc:
        raise ValueError(f"{what} failed to render: {one_line(exc)}") from None


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"


def _reached_name(node: jinja2.nodes.Node) -> str | None:
    """The attribute, item or variable name a node reaches for, when it is a constant."""
    if isinstance(node, jinja2.nodes.Getattr):
        return node.attr
    if isinstance(node, jinja2.nodes.Name):
        return node.name
    if isinstance(node, jinja2.nodes.Const) and isinstance(node.value, str):
        # ``x['__class__']`` and ``x|attr('__class__')`` name it as a string constant
        return node.value if node.value.startswith("__") else None
    return None
