"""The whitelisting parser of filter expressions in configs.

Config strings such as
    "dataset_filters.ConCatFilter([dataset_filters.Max2EventsFilter(),
                                   dataset_filters.DuplicateEventsFilter()])"
are data, never code: `parse_filter` walks Python's syntax tree of the text, accepts only a handful
of node kinds (calls of the known filters, list and number/string literals, `range(...)`, `&`, `|`,
`~`) and builds the objects itself. Nothing in the text is ever evaluated.
"""

from __future__ import annotations

import ast

from neuro_trigger.data.filters import (
    PREFIX,
    ConCatFilter,
    DuplicateEventsFilter,
    ExpertFilter,
    Filter,
    IdentityFilter,
    Max2EventsFilter,
    RangeFilter,
)
from neuro_trigger.errors import UserError, clip

__all__ = ["FilterSyntaxError", "parse_filter"]


class FilterSyntaxError(UserError):
    """A filter expression from a config that is malformed or uses anything outside the whitelist."""


# name -> (class, parameters as (name, kind)); every parameter is required.
_FILTERS: dict[str, tuple[type[Filter], tuple[tuple[str, str], ...]]] = {
    "ConCatFilter": (ConCatFilter, (("filters", "list of filters"),)),
    "DuplicateEventsFilter": (DuplicateEventsFilter, ()),
    "ExpertFilter": (ExpertFilter, (("expert", "int"),)),
    "IdentityFilter": (IdentityFilter, ()),
    "Max2EventsFilter": (Max2EventsFilter, ()),
    "RangeFilter": (RangeFilter, (("r", "range"),)),
}
_ALLOWED = ", ".join([*_FILTERS, "range"])
_MAX_LENGTH = 10_000
_BINOPS = {ast.BitAnd: "&", ast.BitOr: "|"}

_Value = Filter | int | float | str | range | list


def parse_filter(text: str) -> Filter:
    """Build the filter a config string describes, e.g. "dataset_filters.ConCatFilter([...])".

    The text is parsed into a syntax tree that is only inspected, never compiled or evaluated:
    calls of the known filters and of `range`, list/int/float/str/bool literals, unary minus on
    a number, and `&`, `|`, `~` between filters. Anything else raises `FilterSyntaxError` with a
    one-line message naming the offending part and its position.
    """
    if not isinstance(text, str):
        raise FilterSyntaxError(f"filter expression must be a string, got {type(text).__name__}")
    return _Parser(text.strip()).parse()


def _describe(value: object) -> str:
    if isinstance(value, Filter):
        return f"filter {value}"
    if isinstance(value, range):
        return repr(value)
    if isinstance(value, list):
        return f"list of {len(value)}"
    return f"{type(value).__name__} {clip(repr(value))}"


class _Parser:
    """Walks the syntax tree of one expression and builds the filter objects."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = text.splitlines() or [""]

    # ---- messages
    def _shown(self) -> str:
        return clip(repr(self.text))

    def _where(self, lineno: int, col: int) -> str:
        """`col` is 1-based, in characters."""
        return f"line {lineno} column {col}" if len(self.lines) > 1 else f"column {col}"

    def _fail(self, message: str) -> FilterSyntaxError:
        return FilterSyntaxError(f"filter {self._shown()}: {message}")

    def _node_error(self, node: ast.AST, what: str, hint: str = "") -> FilterSyntaxError:
        lineno = getattr(node, "lineno", 1)
        byte_col = getattr(node, "col_offset", 0)
        line = self.lines[lineno - 1] if 0 < lineno <= len(self.lines) else ""
        col = len(line.encode()[:byte_col].decode(errors="ignore")) + 1  # col_offset counts bytes
        message = f"{what} at {self._where(lineno, col)}"
        return self._fail(message + (f"; {hint}" if hint else ""))

    def _segment(self, node: ast.AST) -> str:
        seg = ast.get_source_segment(self.text, node) or type(node).__name__
        return clip(" ".join(seg.split()), 60)

    # ---- entry
    def parse(self) -> Filter:
        if not self.text:
            raise self._fail("empty filter expression; expected e.g. 'dataset_filters.IdentityFilter()'")
        if len(self.text) > _MAX_LENGTH:
            raise self._fail(f"expression longer than {_MAX_LENGTH} characters")
        try:
            tree = ast.parse(self.text, mode="eval")  # only builds the tree; nothing is executed
        except SyntaxError as e:
            where = self._where(e.lineno or 1, e.offset or 1)
            raise self._fail(f"syntax error at {where}: {e.msg}") from None
        except (ValueError, RecursionError, MemoryError) as e:
            raise self._fail(f"cannot parse: {clip(str(e))}") from None
        try:
            value = self._value(tree.body)
        except RecursionError:
            raise self._fail("expression nested too deeply") from None
        if not isinstance(value, Filter):
            raise self._node_error(tree.body, f"expected a filter, got {_describe(value)}")
        return value

    # ---- nodes
    def _value(self, node: ast.AST) -> _Value:
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.Constant):
            if type(node.value) in (bool, int, float, str):
                return node.value
            raise self._node_error(node, f"unsupported constant {self._segment(node)!r}")
        if isinstance(node, ast.List):
            return [self._value(elt) for elt in node.elts]
        if isinstance(node, ast.UnaryOp):
            return self._unary(node)
        if isinstance(node, ast.BinOp):
            return self._binop(node)
        if isinstance(node, ast.Name | ast.Attribute):
            name = self._callee(node)
            raise self._node_error(node, f"'{self._segment(node)}' must be called", f"write {name}(...)")
        raise self._node_error(
            node,
            f"unsupported syntax '{self._segment(node)}' ({type(node).__name__})",
            f"allowed: calls of {_ALLOWED}, lists, numbers, strings, &, |, ~",
        )

    def _unary(self, node: ast.UnaryOp) -> _Value:
        if isinstance(node.op, ast.Invert):
            inner = self._value(node.operand)
            if not isinstance(inner, Filter):
                raise self._node_error(node, f"'~' needs a filter, got {_describe(inner)}")
            return ~inner
        if isinstance(node.op, ast.USub | ast.UAdd):
            operand = node.operand
            if isinstance(operand, ast.Constant) and type(operand.value) in (int, float):
                return -operand.value if isinstance(node.op, ast.USub) else operand.value
            raise self._node_error(node, f"unary minus/plus only on a number, not '{self._segment(node)}'")
        raise self._node_error(
            node, f"unsupported operator in '{self._segment(node)}'", "only &, | and ~ combine filters"
        )

    def _binop(self, node: ast.BinOp) -> _Value:
        symbol = _BINOPS.get(type(node.op))
        if symbol is None:
            raise self._node_error(
                node, f"unsupported operator in '{self._segment(node)}'", "only &, | and ~ combine filters"
            )
        left, right = self._value(node.left), self._value(node.right)
        for side in (left, right):
            if not isinstance(side, Filter):
                raise self._node_error(node, f"'{symbol}' needs filters on both sides, got {_describe(side)}")
        return left & right if symbol == "&" else left | right

    def _callee(self, func: ast.AST) -> str:
        """The called name: `Name` or `dataset_filters.Name`, nothing else."""
        if isinstance(func, ast.Name):
            if func.id in _FILTERS or func.id == "range":
                return func.id
            if func.id == PREFIX:
                raise self._node_error(
                    func, f"'{PREFIX}' must be followed by a filter name", f"allowed: {_ALLOWED}"
                )
            raise self._node_error(func, f"unknown name '{func.id}'", f"allowed: {_ALLOWED}")
        if isinstance(func, ast.Attribute):
            if isinstance(func.value, ast.Name) and func.value.id == PREFIX:
                if func.attr in _FILTERS:
                    return func.attr
                raise self._node_error(
                    func, f"unknown name '{func.attr}' after '{PREFIX}.'", f"allowed: {', '.join(_FILTERS)}"
                )
            raise self._node_error(
                func,
                f"attribute access '{self._segment(func)}' is not allowed",
                f"only the '{PREFIX}.' prefix may precede a filter name",
            )
        raise self._node_error(func, f"cannot call '{self._segment(func)}'", f"allowed: {_ALLOWED}")

    def _call(self, node: ast.Call) -> _Value:
        name = self._callee(node.func)
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self._node_error(arg, f"unpacking '{self._segment(arg)}' is not allowed")
        for kw in node.keywords:
            if kw.arg is None:
                raise self._node_error(kw, f"unpacking '{self._segment(kw)}' is not allowed")
        args = [self._value(arg) for arg in node.args]
        if name == "range":
            return self._range(node, args)

        cls, params = _FILTERS[name]
        signature = f"{name}({', '.join(p for p, _ in params)})"
        if len(args) > len(params):
            raise self._node_error(
                node, f"{name} takes {len(params)} argument(s), got {len(args)}", f"usage: {signature}"
            )
        # parameter -> (value, node of the value, for the position in messages)
        given = {p: (a, n) for (p, _), a, n in zip(params, args, node.args, strict=False)}
        kinds = dict(params)
        for kw in node.keywords:
            if kw.arg not in kinds:
                raise self._node_error(kw, f"{name} has no parameter '{kw.arg}'", f"usage: {signature}")
            if kw.arg in given:
                raise self._node_error(kw, f"{name}: parameter '{kw.arg}' given twice", f"usage: {signature}")
            given[kw.arg] = (self._value(kw.value), kw.value)
        missing = [p for p, _ in params if p not in given]
        if missing:
            raise self._node_error(node, f"{name} is missing argument '{missing[0]}'", f"usage: {signature}")
        for p, kind in params:
            value, arg_node = given[p]
            if not _is_kind(value, kind):
                raise self._node_error(
                    arg_node, f"{name}: argument '{p}' must be {_article(kind)}, got {_describe(value)}"
                )
        try:
            return cls(**{p: value for p, (value, _) in given.items()})
        except (TypeError, ValueError) as e:
            raise self._node_error(node, clip(str(e))) from None

    def _range(self, node: ast.Call, args: list[_Value]) -> range:
        if node.keywords:
            raise self._node_error(node.keywords[0], "range() takes no keyword arguments")
        if not 1 <= len(args) <= 3:
            raise self._node_error(node, f"range() takes 1 to 3 integers, got {len(args)} argument(s)")
        for a, arg_node in zip(args, node.args, strict=True):
            if not _is_kind(a, "int"):
                raise self._node_error(arg_node, f"range() arguments must be integers, got {_describe(a)}")
        try:
            return range(*args)  # type: ignore[arg-type]
        except ValueError as e:
            raise self._node_error(node, f"range(): {clip(str(e))}") from None


def _is_kind(value: object, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "range":
        return isinstance(value, range)
    if kind == "list of filters":
        return isinstance(value, list) and all(isinstance(v, Filter) for v in value)
    raise AssertionError(kind)


def _article(kind: str) -> str:
    return {"int": "an int", "range": "a range(...)", "list of filters": "a list of filters"}[kind]
