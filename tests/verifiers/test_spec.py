"""Verifier specs: parsing, canonical text that parses back, one-line errors with a position, and
validation (options, types, ensemble members, weights) that never builds a verifier."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from noisesearch.api import resolve_verifier
from noisesearch.verifiers.base import _DESCRIPTIONS, _REGISTRY, _VALIDATORS, load_verifier, register_verifier
from noisesearch.verifiers.ensemble import RankEnsemble, ZScoreEnsemble, make_ensemble, member_specs
from noisesearch.verifiers.spec import VerifierSpec

# ----------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text, name, options",
    [
        ("clipscore", "clipscore", {}),
        ("clipscore()", "clipscore", {}),
        ("hpsv2.1", "hpsv2.1", {}),
        (
            "clipscore(model=ViT-B-32, pretrained=/path/file.bin)",
            "clipscore",
            {"model": "ViT-B-32", "pretrained": "/path/file.bin"},
        ),
        (
            "rank-ensemble(verifiers=[aesthetic,clipscore,imagereward])",
            "rank-ensemble",
            {"verifiers": ("aesthetic", "clipscore", "imagereward")},
        ),
        (
            "zscore-ensemble(verifiers=[a,b], weights=[1,2])",
            "zscore-ensemble",
            {"verifiers": ("a", "b"), "weights": (1, 2)},
        ),
        (
            "rank-ensemble(verifiers=[clipscore(model=ViT-B-32),toydetect])",
            "rank-ensemble",
            {"verifiers": (VerifierSpec("clipscore", {"model": "ViT-B-32"}), "toydetect")},
        ),
        (
            " x ( a = '2023' , b=\"it's \\\"q\\\"\", c=true, d=-1.5e-3, e=[], f='', g=[1,[2.5,no]] ) ",
            "x",
            {"a": "2023", "b": 'it\'s "q"', "c": True, "d": -1.5e-3, "e": (), "f": "", "g": (1, (2.5, "no"))},
        ),
    ],
)
def test_parse_reads_names_options_and_values(text, name, options):
    spec = VerifierSpec.parse(text)
    assert spec.name == name
    assert spec.options_dict == options
    assert [type(v) for v in spec.options_dict.values()] == [type(v) for v in options.values()]
    assert VerifierSpec.parse(str(spec)) == spec


def test_canonical_text_sorts_options_and_writes_the_documented_form():
    a = VerifierSpec.parse("clipscore( w=2.0 ,model = ViT-B-32)")
    b = VerifierSpec.parse("clipscore(model=ViT-B-32, w=2.0)")
    assert a == b and hash(a) == hash(b)
    assert str(a) == "clipscore(model=ViT-B-32, w=2.0)"
    assert str(VerifierSpec.parse("zscore-ensemble(weights=[1, 2], verifiers=[ a , b ])")) == (
        "zscore-ensemble(verifiers=[a,b], weights=[1,2])"
    )
    # text that would read as a number, a boolean or syntax is quoted; plain text is not
    odd = VerifierSpec("x", {"a": "1", "b": "true", "c": "has space", "d": "a,b", "e": "ViT-B-32"})
    assert str(odd) == 'x(a="1", b="true", c="has space", d="a,b", e=ViT-B-32)'


def test_tables_and_specs_are_the_same_spec():
    table = {"name": "rank-ensemble", "verifiers": ["toyclip", {"name": "clipscore", "model": "ViT-B-32"}]}
    spec = VerifierSpec.from_mapping(table)
    assert spec == VerifierSpec.parse("rank-ensemble(verifiers=[toyclip,clipscore(model=ViT-B-32)])")
    assert VerifierSpec.coerce(spec) is spec
    assert VerifierSpec.coerce("toyclip") == VerifierSpec("toyclip")


_NAMES = st.sampled_from(["clipscore", "rank-ensemble", "hpsv2.1", "a_b", "x+y"])
_KEYS = st.sampled_from(["model", "pretrained", "w", "verifiers", "weights", "_k2"])
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_SCALARS = st.one_of(
    _TEXT, st.integers(-(10**12), 10**12), st.floats(allow_nan=False, allow_infinity=False), st.booleans()
)


def _specs(depth: int = 2) -> st.SearchStrategy[VerifierSpec]:
    values = (
        _SCALARS
        if depth == 0
        else st.one_of(
            _SCALARS, st.lists(st.one_of(_SCALARS, _specs(depth - 1)), max_size=3).map(tuple), _specs(depth - 1)
        )
    )
    return st.builds(VerifierSpec, _NAMES, st.dictionaries(_KEYS, values, max_size=3))


@settings(max_examples=200, deadline=None)
@given(_specs())
def test_any_spec_round_trips_through_its_text(spec):
    text = str(spec)
    assert VerifierSpec.parse(text) == spec
    assert str(VerifierSpec.parse(text)) == text


@pytest.mark.parametrize(
    "text, position, hint",
    [
        ("", 1, "expected a verifier name"),
        ("clipscore(", 11, "expected an option name"),
        ("clipscore(model)", 16, "write model=VALUE"),
        ("clipscore(model=ViT-B-32", 25, "close them with ')'"),
        ("clipscore(model=a, model=b)", 20, "give model once"),
        ("rank-ensemble(verifiers=[a,b)", 29, "close the list with ']'"),
        ("clipscore(pretrained='x)", 22, "end the text with '"),
        ("clipscore) ", 10, "write options inside parentheses"),
        ("rank-ensemble verifiers=[a]", 15, "write options inside parentheses"),
        ("clipscore(pretrained=/a(1).bin)", 22, "quote text that contains parentheses"),
        ("clipscore(model=)", 17, "expected a value"),
    ],
)
def test_syntax_errors_are_one_line_with_the_position_and_a_fix(text, position, hint):
    with pytest.raises(ValueError) as err:
        VerifierSpec.parse(text)
    message = str(err.value)
    assert "\n" not in message
    assert f"at character {position} " in message
    assert hint in message


# ----------------------------------------------------------------------------------- validation


@pytest.fixture
def never_built():
    """A registered verifier whose factory fails the test if it is ever called."""

    def validate(scale: float = 1.0, **_: object) -> None:
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")

    @register_verifier("scratch-spec", "test only", validate=validate)
    def factory(
        device: str | torch.device = "cpu", scale: float = 1.0, label: str = "", sizes: list[int] | None = None
    ):
        raise AssertionError("validation must not build the verifier")

    yield
    for table in (_REGISTRY, _DESCRIPTIONS, _VALIDATORS):
        table.pop("scratch-spec", None)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "scratch-spec(colour=red)",
            "verifier 'scratch-spec' has no option colour; its options are: scale, label, sizes",
        ),
        ("scratch-spec(scale=big)", "option 'scale' takes a number, got big"),
        ("scratch-spec(scale=true)", "option 'scale' takes a number, got true"),
        ("scratch-spec(label=2023)", "option 'label' takes text, got 2023; quote it: label=\"2023\""),
        ("scratch-spec(sizes=[1,x])", "option 'sizes' takes a list of integers, got [1,x]"),
        ("scratch-spec(scale=-1)", "scale must be > 0, got -1"),
        ("nope", "unknown verifier 'nope'; choose one of:"),
        ("rank-ensemble", "rank-ensemble needs member verifiers, e.g. rank-ensemble(verifiers=[toyclip,toyrelation])"),
        ("rank-ensemble(verifiers=[])", "rank-ensemble needs member verifiers"),
        ("rank-ensemble(verifiers=[toyclip,nope])", "rank-ensemble member 2 (nope): unknown verifier 'nope'"),
        (
            "rank-ensemble(verifiers=[toyclip,scratch-spec(scale=0)])",
            "rank-ensemble member 2 (scratch-spec): scale must be > 0, got 0",
        ),
        (  # members validate recursively
            "rank-ensemble(verifiers=[toyclip,zscore-ensemble(verifiers=[toyclip,toyrelation(path=7)])])",
            "rank-ensemble member 2 (zscore-ensemble): zscore-ensemble member 2 (toyrelation): verifier 'toyrelation' "
            "option 'path' takes text",
        ),
        (
            "rank-ensemble(verifiers='toyclip,nope(')",
            "rank-ensemble members: verifier spec 'toyclip,nope(': at character 14",
        ),
        (
            "rank-ensemble(verifiers=[toyclip,toyrelation], weights=[1,2])",
            "has no option weights; its options are: verifiers",
        ),
        ("zscore-ensemble(verifiers=[toyclip,toyrelation], weights=[1])", "has 2 member verifier(s) but 1 weight(s)"),
        (
            "zscore-ensemble(verifiers=[toyclip,toyrelation], weights=[0,0])",
            "weights must be numbers >= 0, not all zero",
        ),
        ("zscore-ensemble(verifiers=[toyclip,toyrelation], weights=[1,x])", "takes a list of numbers, got [1,x]"),
        ("rank-ensemble(verifiers=[toyclip,3])", "rank-ensemble member 2"),
    ],
)
def test_validate_names_the_problem_without_building_anything(never_built, text, message):
    with pytest.raises(ValueError) as err:
        VerifierSpec.parse(text).validate()
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_valid_specs_validate_without_building(never_built):
    for text in (
        "scratch-spec(scale=2, label='2023', sizes=[1,2])",
        "rank-ensemble(verifiers=[toyclip,scratch-spec(scale=0.5)])",
        "rank-ensemble(verifiers='toyclip,scratch-spec(scale=3)')",  # the comma-separated text form
        "zscore-ensemble(verifiers=[toyclip,rank-ensemble(verifiers=[scratch-spec,toydetect])], weights=[1,2.5])",
    ):
        spec = VerifierSpec.parse(text)
        assert spec.validate() is spec


# ----------------------------------------------------------------------------------- ensembles


def test_member_specs_accept_text_lists_tables_and_specs():
    expected = [VerifierSpec("toyclip"), VerifierSpec("clipscore", {"model": "ViT-B-32"})]
    assert member_specs("toyclip,clipscore(model=ViT-B-32)") == expected
    assert member_specs(["toyclip", "clipscore(model=ViT-B-32)"]) == expected
    assert member_specs(("toyclip", {"name": "clipscore", "model": "ViT-B-32"})) == expected
    assert member_specs(VerifierSpec("toyclip")) == expected[:1]


@pytest.fixture(scope="module")
def toy_images():
    torch.manual_seed(0)
    return torch.rand(5, 3, 64, 64), ["a red circle"] * 5


def test_rank_ensemble_from_a_spec_equals_the_hand_built_one(toy_images):
    images, prompts = toy_images
    spec = "rank-ensemble(verifiers=[toyclip,toyrelation(path='')])"  # '' is the shipped file, like no path
    built = resolve_verifier(spec, "cpu")
    assert isinstance(built, RankEnsemble) and [v.name for v in built.verifiers] == ["toyclip", "toyrelation"]
    assert built.name == spec.replace("'", '"')  # named by its canonical spec in results and reports
    by_hand = RankEnsemble([load_verifier("toyclip"), load_verifier("toyrelation")])
    assert torch.equal(built.score(images, prompts), by_hand.score(images, prompts))


def test_zscore_ensemble_from_a_spec_has_its_weights_and_members(toy_images):
    images, prompts = toy_images
    built = VerifierSpec.parse("zscore-ensemble(verifiers=[toyclip,toyrelation], weights=[1,3])").load()
    assert isinstance(built, ZScoreEnsemble) and built.weights.tolist() == [1.0, 3.0]
    by_hand = make_ensemble("zscore", "toyclip,toyrelation", weights=[1, 3])
    assert torch.allclose(built.score(images, prompts), by_hand.score(images, prompts))


def test_a_bad_member_fails_before_any_member_loads(monkeypatch):
    loaded = []
    original = _REGISTRY["toyclip"]
    monkeypatch.setitem(_REGISTRY, "toyclip", lambda **kw: loaded.append(kw) or original(**kw))
    with pytest.raises(ValueError, match="member 2 \\(toydetect\\): verifier 'toydetect' has no option size"):
        make_ensemble("rank", ["toyclip", "toydetect(size=3)"])
    assert loaded == []


# ----------------------------------------------------------------------------------- Python API


@pytest.fixture
def scaled_red():
    @register_verifier("spec-red", "test only: scale x mean red")
    def factory(device: str | torch.device = "cpu", scale: float = 1.0):
        from noisesearch.verifiers import CallableVerifier

        return CallableVerifier(lambda im, p: scale * im[:, 0].mean(dim=(1, 2)), name="spec-red")

    yield
    for table in (_REGISTRY, _DESCRIPTIONS, _VALIDATORS):
        table.pop("spec-red", None)


def test_search_takes_spec_text_or_a_spec_and_names_the_result_by_it(scaled_red):
    import noisesearch
    from noisesearch.testing import StubAdapter

    one = noisesearch.search(StubAdapter(), "p", verifier="spec-red", candidates=4, steps=2)
    for verifier in ("spec-red(scale=2)", VerifierSpec("spec-red", {"scale": 2})):
        two = noisesearch.search(StubAdapter(), "p", verifier=verifier, candidates=4, steps=2)
        assert two.verifier == "spec-red(scale=2)" and one.verifier == "spec-red"
        assert two.best.seed == one.best.seed and two.best.score == pytest.approx(2 * one.best.score)


def test_search_checks_the_spec_before_loading_the_model(scaled_red):
    import noisesearch

    with pytest.raises(ValueError, match="verifier 'spec-red' has no option scael; its options are: scale"):
        noisesearch.search("no/such-model", "p", verifier="spec-red(scael=2)")
