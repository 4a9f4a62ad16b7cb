"""Verifier specs: a verifier name with options, written as one string.

The same syntax serves ``noisesearch run --verifier``, :func:`noisesearch.search` and the
``search_verifiers`` / ``eval_verifiers`` lists of a sweep config::

    clipscore                                               a name alone
    clipscore(model=ViT-B-32, pretrained=/path/file.bin)    options: key=value, separated by commas
    zscore-ensemble(verifiers=[toyclip,toyrelation], weights=[1,2])   lists in brackets
    rank-ensemble(verifiers=[clipscore(model=ViT-B-32),toydetect])    member specs nest

Values are integers, floats (``2.5``, ``1e-3``), ``true``/``false``, lists ``[a,b]``, nested specs
``name(key=value)`` (ensemble members), or text. Text needs no quotes unless it contains a space
or one of ``,()[]='"`` or would read as a number or boolean (``'2023'``); single or double quotes
both work, with ``\\`` escaping a quote inside.

``str(spec)`` is canonical (options sorted by name, ``, `` between options, ``,`` inside lists,
quotes only where needed) and parses back to an equal spec, so a sweep can key its rows by it:
two specs that differ in any option are different rows.
"""

from __future__ import annotations

import inspect
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

#: a registered verifier name: letters, digits and ``_ . + -`` (e.g. ``hpsv2.1``, ``rank-ensemble``)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+\-]*")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: an unquoted value runs up to whitespace or a character of the syntax
_BARE = re.compile(r"[^\s,()\[\]='\"]+")
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")

#: an option value: scalar, nested spec, or (possibly nested) list of them
Value = Union[str, int, float, bool, "VerifierSpec", tuple["Value", ...]]


def _bare_value(token: str) -> Value:
    """An unquoted token as a bool, int, float or text."""
    if token in ("true", "false"):
        return token == "true"
    if _INT.fullmatch(token):
        return int(token)
    if _FLOAT.fullmatch(token):
        return float(token)
    return token


def _freeze(value: Any, where: str) -> Value:
    """Lists -> tuples (recursively); checks every value has a type the syntax can write.

    A nested spec without options becomes its name: both are written ``name``, so the text alone
    cannot tell them apart (ensembles read either as a member)."""
    if isinstance(value, VerifierSpec):
        return value if value.options else value.name
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} is not a finite number")
        return value
    if isinstance(value, list | tuple):
        return tuple(_freeze(v, where) for v in value)
    if isinstance(value, Mapping):  # a TOML table inside a list: a nested spec
        return _freeze(VerifierSpec.from_mapping(value), where)
    raise ValueError(
        f"{where}: a value must be text, a number, true/false, a list or a verifier spec, got {type(value).__name__}"
    )


def format_value(value: Value) -> str:
    """A value in the spec syntax; :meth:`VerifierSpec.parse` reads it back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, VerifierSpec):
        return str(value)
    if isinstance(value, tuple):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if _BARE.fullmatch(value) and isinstance(_bare_value(value), str):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class VerifierSpec:
    """A registered verifier name and its options, e.g. ``clipscore(model=ViT-B-32)``."""

    name: str  # registered verifier name (see `noisesearch verifiers`)
    options: tuple[tuple[str, Value], ...] = ()  # (option, value) pairs, sorted by option name

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(
                f"verifier name {self.name!r} is not a name; use letters, digits and _ . + - (see `noisesearch verifiers`)"
            )
        pairs = self.options.items() if isinstance(self.options, Mapping) else self.options
        frozen: dict[str, Value] = {}
        for key, value in pairs:
            if not isinstance(key, str) or not _KEY.fullmatch(key):
                raise ValueError(f"verifier {self.name!r}: option name {key!r} is not an identifier")
            if key in frozen:
                raise ValueError(f"verifier {self.name!r}: option {key!r} is given twice; give it once")
            frozen[key] = _freeze(value, f"verifier {self.name!r} option {key!r}")
        object.__setattr__(self, "options", tuple(sorted(frozen.items())))

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> VerifierSpec:
        """Reads ``name`` or ``name(key=value, ...)``; ``ValueError`` names the position and the fix."""
        if not isinstance(text, str):
            raise ValueError(f"a verifier spec must be text such as 'clipscore(model=ViT-B-32)', got {text!r}")
        parser = _Parser(text)
        spec = parser.spec()
        parser.end()
        return spec

    @classmethod
    def parse_list(cls, text: str) -> list[VerifierSpec]:
        """Reads comma-separated specs, e.g. ``'toyclip,clipscore(model=ViT-B-32)'`` (ensemble members)."""
        parser = _Parser(text)
        specs = [parser.spec()]
        while parser.accept(","):
            specs.append(parser.spec())
        parser.end()
        return specs

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> VerifierSpec:
        """A TOML/JSON table ``{name = "clipscore", model = "ViT-B-32"}``; nested tables are members."""
        if "name" not in table or not isinstance(table["name"], str):
            raise ValueError(
                f'a verifier table needs a \'name\' (e.g. {{name = "clipscore", model = "ViT-B-32"}}), got {dict(table)!r}'
            )
        return cls(table["name"], tuple((k, v) for k, v in table.items() if k != "name"))

    @classmethod
    def coerce(cls, value: str | VerifierSpec | Mapping[str, Any]) -> VerifierSpec:
        """A spec from its text, a table, or itself."""
        if isinstance(value, VerifierSpec):
            return value
        if isinstance(value, Mapping):
            return cls.from_mapping(value)
        return cls.parse(value)

    # --- use --------------------------------------------------------------------------------
    @property
    def options_dict(self) -> dict[str, Value]:
        return dict(self.options)

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return f"{self.name}({', '.join(f'{k}={format_value(v)}' for k, v in self.options)})"

    def validate(self) -> VerifierSpec:
        """Checks the name, each option's name and type, and the verifier's own value checks
        (ensembles check their members) without loading any weights; returns ``self``."""
        from noisesearch.verifiers.base import check_verifier_options, register_builtin_verifiers

        register_builtin_verifiers()
        try:
            _check_types(self)
            check_verifier_options(self.name, self.options_dict)
        except TypeError as e:  # a validate hook that met a value of an unexpected type
            raise ValueError(f"verifier {str(self)!r}: {e}") from e
        return self

    def load(self, device: Any = "cpu") -> Any:
        """Validates, then builds the verifier (see :func:`noisesearch.verifiers.load_verifier`)."""
        from noisesearch.verifiers.base import load_verifier

        self.validate()
        return load_verifier(self.name, device=device, **self.options_dict)


# ------------------------------------------------------------------------------- parsing


class _Parser:
    """Recursive descent over one spec string; positions in errors count characters from 1."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, expected: str, fix: str) -> ValueError:
        found = f"{self.text[self.pos]!r}" if self.pos < len(self.text) else "the end"
        return ValueError(
            f"verifier spec {self.text!r}: at character {self.pos + 1} expected {expected}, found {found}; {fix}"
        )

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def accept(self, char: str) -> bool:
        self.skip()
        if self.text.startswith(char, self.pos):
            self.pos += 1
            return True
        return False

    def end(self) -> None:
        self.skip()
        if self.pos != len(self.text):
            raise self.fail(
                "the end of the spec",
                "write options inside parentheses, name(key=value, ...), and quote text that holds , ( ) [ ] = or spaces",
            )

    def match(self, pattern: re.Pattern[str]) -> str | None:
        self.skip()
        m = pattern.match(self.text, self.pos)
        if m is None:
            return None
        self.pos = m.end()
        return m.group(0)

    def spec(self) -> VerifierSpec:
        name = self.match(_NAME)
        if name is None:
            raise self.fail(
                "a verifier name", "start with a registered name such as clipscore (see `noisesearch verifiers`)"
            )
        return self.rest_of_spec(name)

    def rest_of_spec(self, name: str) -> VerifierSpec:
        options: dict[str, Value] = {}
        if self.accept("("):
            if not self.accept(")"):
                while True:
                    start = self.pos
                    key = self.match(_KEY)
                    if key is None:
                        raise self.fail("an option name", "write options as key=value, e.g. clipscore(model=ViT-B-32)")
                    if key in options:
                        self.pos = start
                        self.skip()
                        raise self.fail(f"a new option (not {key!r} again)", f"give {key} once")
                    if not self.accept("="):
                        raise self.fail(f"'=' after {key!r}", f"write {key}=VALUE")
                    options[key] = self.value()
                    if self.accept(")"):
                        break
                    if not self.accept(","):
                        raise self.fail("',' or ')'", "separate options with commas and close them with ')'")
        try:
            return VerifierSpec(name, tuple(options.items()))
        except ValueError as e:  # pragma: no cover - the grammar only yields valid names and keys
            raise ValueError(f"verifier spec {self.text!r}: {e}") from e

    def value(self) -> Value:
        self.skip()
        if self.accept("["):
            items: list[Value] = []
            if self.accept("]"):
                return ()
            while True:
                items.append(self.value())
                if self.accept("]"):
                    return tuple(items)
                if not self.accept(","):
                    raise self.fail("',' or ']'", "separate list items with commas and close the list with ']'")
        if self.pos < len(self.text) and self.text[self.pos] in "'\"":
            return self.quoted()
        start = self.pos
        token = self.match(_BARE)
        if token is None:
            raise self.fail("a value", "give text, a number, true/false, a [list] or a spec; quote text with 'quotes'")
        after = self.pos
        self.skip()
        if self.text.startswith("(", self.pos):  # name(...) inside a value: a member spec
            if not _NAME.fullmatch(token):
                self.pos = start
                raise self.fail("a verifier name before '('", "quote text that contains parentheses")
            return self.rest_of_spec(token)
        self.pos = after
        return _bare_value(token)

    def quoted(self) -> str:
        quote = self.text[self.pos]
        opened = self.pos
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            self.pos += 1
            if char == quote:
                return "".join(out)
            out.append(char)
        self.pos = opened
        raise self.fail(f"a closing {quote} for the text opened here", f"end the text with {quote}")


# ------------------------------------------------------------------------------- types


def _accepts(hint: Any, value: Value) -> bool | None:
    """Whether ``value`` fits the annotation ``hint``: True, False, or None when the hint is not
    one this check understands (then the verifier's own checks decide)."""
    if hint is Any or hint is inspect.Parameter.empty:
        return None
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        verdicts = [_accepts(arg, value) for arg in typing.get_args(hint) if arg is not type(None)]
        if any(v is True for v in verdicts):
            return True
        return None if any(v is None for v in verdicts) else False
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence, typing.Sequence) or hint in (list, tuple):
        if not isinstance(value, tuple):
            return False
        args = typing.get_args(hint)
        if not args:
            return True
        verdicts = [_accepts(args[0], v) for v in value]
        if any(v is False for v in verdicts):
            return False
        return True if all(v is True for v in verdicts) else None
    return None


def _describe(hint: Any, plural: bool = False) -> str:
    names = (
        {bool: "true/false values", int: "integers", float: "numbers", str: "texts"}
        if plural
        else {bool: "true or false", int: "an integer", float: "a number", str: "text"}
    )
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    parts = []
    for a in args:
        if a in names:
            parts.append(names[a])
        elif typing.get_origin(a) in (list, tuple, Sequence, typing.Sequence):
            inner = typing.get_args(a)
            parts.append(f"a list of {_describe(inner[0], plural=True)}" if inner else "a list")
    return " or ".join(dict.fromkeys(parts)) or str(hint)


def _check_types(spec: VerifierSpec) -> None:
    """Checks each known option's value against the type its factory declares."""
    from noisesearch.verifiers.base import _REGISTRY, _check_name

    _check_name(spec.name)
    factory = _REGISTRY[spec.name]
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # unresolvable annotations: leave the checks to the verifier
        return
    for key, value in spec.options:
        if key not in hints or _accepts(hints[key], value) is not False:
            continue
        fix = (
            f"; quote it: {key}={format_value(str(value))}"
            if _accepts(hints[key], str(value)) and not isinstance(value, tuple | VerifierSpec)
            else ""
        )
        raise ValueError(
            f"verifier {spec.name!r} option {key!r} takes {_describe(hints[key])}, got {format_value(value)}{fix}"
        )
