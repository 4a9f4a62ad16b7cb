"""Property-based tests (hypothesis) of configuration parsing and budget accounting.

(a) Strategy options from command-line flags and TOML files, :class:`CoreConfig` and
    :func:`noisesearch.api.budget_from`: random valid inputs parse to exactly what they say; random
    invalid inputs raise ``ValueError`` with a one-line message, never another exception type.
(b) Budget accounting: for random budgets, steps, batch sizes, guidance and strategy options on the
    counting stub, NFEs never exceed the budget and every count in the accounting equals what the
    stub model and a counting verifier actually saw.

The flag and option tables come from the registered strategy classes, so a new strategy's options
are covered as soon as it registers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import noisesearch
from noisesearch.api import budget_from
from noisesearch.core.sampler import MAX_SIDE, MAX_STEPS, CoreConfig
from noisesearch.request import ensure_registrations
from noisesearch.strategies.base import _STRATEGIES, make_strategy
from noisesearch.strategies.options import load_strategy_file, parse_strategy_args
from noisesearch.testing import StubAdapter

ensure_registrations()

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CORE_STRATEGIES = ["random", "prune", "zero-order", "paths", "smc", "gradient"]  # with stub-cheap options
FLAG_STRATEGIES = sorted(n for n, c in _STRATEGIES.items() if getattr(c, "cli_options", None))
ALL_STRATEGIES = sorted(_STRATEGIES)


def field_types(name: str) -> dict[str, type]:
    """Field -> bool/int/float/str of a strategy dataclass (Optional[X] -> X)."""
    cls = _STRATEGIES[name]
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if typing.get_origin(kind) is not None:
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        out[f.name] = kind
    return out


def one_line(err: BaseException) -> str:
    msg = str(err)
    assert msg.strip() and "\n" not in msg, repr(msg)
    return msg


# single-line, TOML- and JSON-safe text (no control characters or surrogates)
TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=12)
FINITE = st.floats(allow_nan=False, allow_infinity=False, width=64)
TYPED = {bool: st.booleans(), int: st.integers(-(2**40), 2**40), float: st.floats(allow_nan=False), str: TEXT}


# --------------------------------------------------------------------------- (a) CLI flags


@st.composite
def flag_words(draw):
    """(strategy, words, expected dict): typed values for random flags, as `--f v` or `--f=v`."""
    name = draw(st.sampled_from(FLAG_STRATEGIES))
    types = field_types(name)
    flags = list(_STRATEGIES[name].cli_options.items())
    words: list[str] = []
    expected: dict = {}
    for flag, field in draw(st.lists(st.sampled_from(flags), max_size=6)):
        if "/" in flag:  # --x/--no-x: a boolean switch without a value
            on, off = flag.split("/", 1)
            value = draw(st.booleans())
            words.append(on if value else off)
        else:
            value = draw(TYPED[types[field]])
            text = repr(value) if isinstance(value, float) else str(value)
            words += [f"{flag}={text}"] if draw(st.booleans()) else [flag, text]
        expected[field] = value  # the last occurrence wins
    return name, words, expected


@SETTINGS
@given(flag_words())
def test_cli_flags_parse_to_what_they_say(case):
    name, words, expected = case
    assert parse_strategy_args(name, words) == expected


@SETTINGS
@given(st.sampled_from(FLAG_STRATEGIES), st.data())
def test_random_cli_words_parse_or_raise_a_one_line_value_error(name, data):
    flags = [w for f in _STRATEGIES[name].cli_options for w in f.split("/")]
    word = st.one_of(
        st.sampled_from(flags), TEXT, st.sampled_from(flags).flatmap(lambda f: TEXT.map(lambda t: f"{f}={t}"))
    )
    words = data.draw(st.lists(word, max_size=6))
    try:
        parsed = parse_strategy_args(name, words)
    except ValueError as err:
        one_line(err)
        return
    assert set(parsed) <= set(field_types(name))
    try:  # parsed values have the right types; the strategy accepts them or says why not
        make_strategy(name, **parsed)
    except ValueError as err:
        one_line(err)


@SETTINGS
@given(st.sampled_from(FLAG_STRATEGIES), st.data())
def test_unknown_flags_and_wrong_types_are_value_errors_naming_them(name, data):
    types = field_types(name)
    valued = [(f, fld) for f, fld in _STRATEGIES[name].cli_options.items() if "/" not in f]
    switches = [f for f in _STRATEGIES[name].cli_options if "/" in f]
    kind = data.draw(st.sampled_from(["unknown", "type", "switch-value", "missing"]))
    if kind == "unknown":
        flag = data.draw(st.from_regex(r"--[a-z][a-z-]{0,12}", fullmatch=True))
        assume(flag not in {w for f in _STRATEGIES[name].cli_options for w in f.split("/")})
        words, needle = [flag, "1"], repr(flag)
    elif kind == "type":
        numeric = [(f, fld) for f, fld in valued if types[fld] in (int, float)]
        assume(numeric)
        flag, fld = data.draw(st.sampled_from(numeric))
        bad = data.draw(TEXT.filter(lambda t: not _parses_as(types[fld], t)))
        words, needle = [flag, bad], repr(bad)
    elif kind == "switch-value":  # "--zo-restart=false" must not silently mean --zo-restart
        assume(switches)
        flag = data.draw(st.sampled_from([w for f in switches for w in f.split("/")]))
        words, needle = [f"{flag}={data.draw(TEXT)}"], "takes no value"
    else:
        assume(valued)
        flag = data.draw(st.sampled_from(valued))[0]
        words, needle = [flag], "needs a value"
    with pytest.raises(ValueError) as err:
        parse_strategy_args(name, words)
    assert needle in one_line(err.value)


def _parses_as(kind: type, text: str) -> bool:
    try:
        kind(text)
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------- (a) TOML files


def toml_value(value, as_int: bool = False) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) or as_int:
        return str(int(value))
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)  # repr gives inf, -inf, 1e+16: all TOML
    return json.dumps(value, ensure_ascii=False)  # a TOML basic string for this alphabet


@st.composite
def toml_options(draw):
    """(strategy, TOML text, expected dict) with typed values, top level or under [strategy.<name>]."""
    name = draw(st.sampled_from(ALL_STRATEGIES))
    types = field_types(name)
    fields = draw(st.lists(st.sampled_from(sorted(types)), unique=True, max_size=6))
    lines, expected = [], {}
    for f in fields:
        kind = types[f]
        if kind is float and draw(st.booleans()):  # an integer where a float is expected: converted
            value = draw(st.integers(-(2**53), 2**53))
            lines.append(f"{f} = {value}")
            expected[f] = float(value)
            continue
        value = draw({**TYPED, int: st.integers(-(2**63), 2**63 - 1)}[kind])
        lines.append(f"{f} = {toml_value(value)}")
        expected[f] = value
    header = draw(st.sampled_from(["", f"[strategy.{name}]\n", f'[strategy."{name}"]\n']))
    return name, header + "\n".join(lines) + "\n", expected


@SETTINGS
@given(toml_options())
def test_toml_options_parse_to_what_they_say(tmp_path_factory, case):
    name, text, expected = case
    path = tmp_path_factory.mktemp("toml") / "s.toml"
    path.write_text(text, encoding="utf-8")
    assert load_strategy_file(name, path) == expected


TOML_SCALAR = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.floats().map(toml_value),
    TEXT.map(toml_value),
    st.just("1979-05-27T07:32:00Z"),
    st.just("[1, 2]"),
    st.just("{ a = 1 }"),
    st.just("[]"),
    st.just(str(10**30)),  # a float field given an integer beyond float range
).map(lambda v: toml_value(v) if isinstance(v, bool) else v)


@SETTINGS
@given(st.sampled_from(ALL_STRATEGIES), st.data())
def test_random_toml_parses_or_raises_a_one_line_value_error(tmp_path_factory, name, data):
    """Random bytes, random text, and valid TOML with random values of random types."""
    fields = sorted(field_types(name))
    kind = data.draw(st.sampled_from(["bytes", "text", "values", "sections"]))
    if kind == "bytes":
        raw = data.draw(st.binary(max_size=60))
    elif kind == "text":
        raw = data.draw(st.text(max_size=60)).encode("utf-8", "surrogatepass")
    elif kind == "values":
        keys = data.draw(
            st.lists(
                st.one_of(st.sampled_from(fields), st.from_regex(r"[a-z_]{1,8}", fullmatch=True)),
                unique=True,
                max_size=5,
            )
        )
        raw = "\n".join(f"{k} = {data.draw(TOML_SCALAR)}" for k in keys).encode()
    else:  # the [strategy] table in odd shapes
        raw = data.draw(
            st.sampled_from(
                [
                    f"[strategy]\n{name} = 5\n",
                    f"strategy = {{ {json.dumps(name)} = [1] }}\n",
                    "strategy = 3\n",
                    f"[strategy.{name}]\n[strategy.{name}.nested]\nx = 1\n",
                    "[strategy.other]\nx = 1\n",
                ]
            )
        ).encode()
    path = tmp_path_factory.mktemp("toml") / "s.toml"
    path.write_bytes(raw)
    try:
        options = load_strategy_file(name, path)
    except ValueError as err:
        one_line(err)
        return
    assert set(options) <= set(fields)
    try:
        make_strategy(name, **options)
    except ValueError as err:
        one_line(err)


def test_unreadable_strategy_files_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot read strategy config .*missing.toml"):
        load_strategy_file("random", tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="cannot read strategy config"):
        load_strategy_file("random", tmp_path)  # a folder
    (tmp_path / "latin1.toml").write_bytes(b"x = '\xe9'\n")
    with pytest.raises(ValueError, match="latin1.toml.*not UTF-8"):
        load_strategy_file("random", tmp_path / "latin1.toml")
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        load_strategy_file("nope", tmp_path / "latin1.toml")


# --------------------------------------------------------------------------- (a) CoreConfig


VALID_CORE = {
    "steps": st.integers(1, MAX_STEPS),
    "guidance": st.one_of(st.floats(0, 1e6), st.integers(0, 100)),
    "height": st.one_of(st.none(), st.integers(8, MAX_SIDE)),
    "width": st.one_of(st.none(), st.integers(8, MAX_SIDE)),
    "max_batch": st.integers(1, 2**40),
}
JUNK = st.one_of(TEXT, st.lists(st.integers(), max_size=2), st.just(object()))
INVALID_CORE = {
    "steps": st.one_of(st.integers(max_value=0), st.integers(MAX_STEPS + 1), FINITE, st.none(), JUNK),
    "guidance": st.one_of(st.floats(max_value=-1e-9), st.just(float("nan")), st.just(math.inf), st.none(), JUNK),
    "height": st.one_of(st.integers(max_value=7), st.integers(MAX_SIDE + 1), FINITE, JUNK),
    "width": st.one_of(st.integers(max_value=7), st.integers(MAX_SIDE + 1), FINITE, JUNK),
    "max_batch": st.one_of(st.integers(max_value=0), FINITE, st.none(), JUNK),
}


@SETTINGS
@given(st.fixed_dictionaries(VALID_CORE))
def test_valid_core_configs_keep_their_values(values):
    cfg = CoreConfig(**values)
    assert {k: getattr(cfg, k) for k in values} == values


@SETTINGS
@given(st.fixed_dictionaries(VALID_CORE), st.sampled_from(sorted(INVALID_CORE)), st.data())
def test_an_invalid_core_setting_is_a_value_error_naming_it(values, field, data):
    values[field] = data.draw(INVALID_CORE[field])
    with pytest.raises(ValueError) as err:
        CoreConfig(**values)
    assert one_line(err.value).startswith(field)


# --------------------------------------------------------------------------- (a) budget_from


@SETTINGS
@given(st.integers(1, 10**6), st.data())
def test_budget_from_returns_what_was_asked(steps, data):
    which = data.draw(st.sampled_from(["budget", "candidates", "default"]))
    if which == "budget":
        budget = data.draw(st.integers(steps, 10**9))
        assert budget_from(budget, None, steps) == budget
    elif which == "candidates":
        n = data.draw(st.integers(1, 10**6))
        assert budget_from(None, n, steps) == n * steps
    else:
        assert budget_from(None, None, steps) == 16 * steps


NOT_AN_INT = st.one_of(FINITE, st.just(math.inf), st.just(math.nan), TEXT, st.lists(st.integers(), max_size=2))


@SETTINGS
@given(st.integers(2, 1000), st.data())
def test_invalid_budgets_are_value_errors(steps, data):
    budget, candidates = data.draw(
        st.sampled_from(
            [
                (st.integers(max_value=0), st.none()),
                (st.integers(1, steps - 1), st.none()),  # less than one full sample
                (NOT_AN_INT, st.none()),
                (st.none(), st.integers(max_value=0)),
                (st.none(), NOT_AN_INT),
                (st.integers(1, 10**6), st.integers(1, 10**6)),  # both: contradictory
            ]
        )
    )
    b, c = data.draw(budget), data.draw(candidates)
    assume(not (b is None and c is None))
    with pytest.raises(ValueError) as err:
        budget_from(b, c, steps)
    one_line(err.value)


# --------------------------------------------------------------------------- (b) accounting


class CountingVerifier:
    """Mean red channel (differentiable); counts the images it is shown."""

    name = "counting-red"
    differentiable = True

    def __init__(self) -> None:
        self.images = 0
        self.calls = 0

    def score(self, images: torch.Tensor, prompts) -> torch.Tensor:
        self.images += images.shape[0]
        self.calls += 1
        return images[:, 0].mean(dim=(1, 2))


STRATEGY_OPTIONS = {
    "random": st.fixed_dictionaries({}, optional={"round_size": st.integers(0, 5)}),
    "prune": st.fixed_dictionaries(
        {},
        optional={
            "at": st.floats(0, 0.5),
            "jumps": st.integers(0, 3),
            "keep": st.floats(0.05, 1),
            "halving": st.booleans(),
        },
    ),
    "zero-order": st.fixed_dictionaries(
        {},
        optional={
            "neighbors": st.integers(1, 4),
            "cosine": st.floats(0, 0.99),
            "restart": st.booleans(),
            "fresh": st.integers(0, 2),
        },
    ),
    "paths": st.fixed_dictionaries(
        {},
        optional={
            "paths": st.integers(1, 3),
            "branches": st.integers(1, 3),
            "sigma": st.floats(0, 0.9),
            "finish_within": st.integers(0, 2),
        },
    ),
    "smc": st.fixed_dictionaries(
        {},
        optional={
            "particles": st.integers(0, 5),
            "resample_every": st.integers(0, 3),
            "ess_threshold": st.floats(0, 1),
            "resampler": st.sampled_from(["multinomial", "systematic"]),
            "churn": st.floats(0, 1),
            "standardize": st.booleans(),
            "lookahead": st.integers(0, 2),
        },
    ),
    "gradient": st.fixed_dictionaries(
        {},
        optional={
            "candidates": st.integers(1, 3),
            "iterations": st.integers(1, 6),
            "opt_steps": st.integers(0, 3),
            "optimizer": st.sampled_from(["sgd", "adam"]),
        },
    ),
}


@st.composite
def search_case(draw):
    strategy = draw(st.sampled_from(CORE_STRATEGIES))
    steps = draw(st.integers(1, 8))
    budget = draw(st.integers(steps, 9 * steps + 7))
    return dict(
        strategy=strategy,
        options=draw(STRATEGY_OPTIONS[strategy]),
        steps=steps,
        budget=budget,
        max_batch=draw(st.integers(1, 6)),
        guidance=draw(st.sampled_from([0.0, 1.0, 3.0])),
        seed=draw(st.integers(0, 2**31)),
        prediction=draw(st.sampled_from(["epsilon", "v_prediction"])),
    )


@settings(max_examples=50, deadline=None)
@given(search_case())
def test_nfe_never_exceeds_the_budget_and_accounting_equals_what_was_seen(case):
    stub, verifier = StubAdapter(case["prediction"]), CountingVerifier()
    r = noisesearch.search(
        stub,
        "a red circle",
        strategy=case["strategy"],
        strategy_options=case["options"],
        verifier=verifier,
        budget=case["budget"],
        steps=case["steps"],
        guidance=case["guidance"],
        max_batch=case["max_batch"],
        seed=case["seed"],
    )
    acc = r.accounting
    assert 0 < acc.nfe <= case["budget"] == r.budget_nfe
    rows_per_candidate = 2 if case["guidance"] > 1 else 1  # a CFG pair is one NFE but two rows
    assert stub.rows == acc.network_rows == rows_per_candidate * acc.nfe
    assert stub.calls == acc.network_calls
    assert verifier.images == acc.verifier_calls >= len(r.candidates) >= 1
    assert len({c.seed for c in r.candidates}) == len(r.candidates)  # no candidate recorded twice
    assert r.history and r.history[-1].nfe == acc.nfe
    if case["strategy"] == "random":  # best-of-N: exactly N = budget // steps full samples
        assert len(r.candidates) == case["budget"] // case["steps"]
        assert acc.nfe == len(r.candidates) * case["steps"]
