"""Fuzzing `noisesearch run`: bad values for every option, random junk for the name options, and
random combinations of several bad options. Every one must end with exit code 2, one line naming
the cause and no traceback.

Runs in process (typer's CliRunner) on the weightless ``stub`` model with a cheap registered
verifier, so a bad input that slipped through would start a search costing milliseconds; options
validated while loading a real model (--device, --dtype) use the embedded ``toyworld`` model, and are
rejected before its weights are read.

Two kinds of exit-2 output exist: the project's own checks print ``error: <cause>`` as the last
(and only error) line of stderr; values the argument parser itself rejects (a word where a number
is expected, a missing value) are reported by click/typer as a boxed usage error naming the option.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from noisesearch.cli import app
from noisesearch.core.schedule import SOLVERS
from noisesearch.models import resolve_device
from noisesearch.request import ensure_registrations
from noisesearch.strategies.base import _STRATEGIES
from noisesearch.verifiers import CallableVerifier, available_verifiers, register_verifier

VERIFIER = "fuzz-red"


@register_verifier(VERIFIER, "tests: mean of the red channel (not differentiable)")
def _fuzz_red(device="cpu") -> CallableVerifier:
    return CallableVerifier(lambda images, prompts: images[:, 0].mean(dim=(1, 2)), name=VERIFIER)


ensure_registrations()
runner = CliRunner()
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad files and folders, by name."""
    d = tmp_path_factory.mktemp("fuzzfiles")
    f = {
        "missing": d / "missing.txt",
        "folder": d / "folder",
        "empty": d / "empty.txt",
        "nocolumn": d / "p.csv",
        "latin1": d / "latin1.txt",
        "blocker": d / "blocker",
        "bad_toml": d / "bad.toml",
        "latin1_toml": d / "latin1.toml",
        "unknown_toml": d / "unknown.toml",
        "type_toml": d / "type.toml",
        "range_toml": d / "range.toml",
        "section_toml": d / "section.toml",
        "other_toml": d / "other.toml",
        "contra_toml": d / "contra.toml",
        "no_index": d / "no_index",
        "foreign_pipe": d / "foreign_pipe",
    }
    f["folder"].mkdir()
    f["empty"].write_text("\n# only a comment\n\n")
    f["nocolumn"].write_text("text,category\na red circle,color\n")
    f["latin1"].write_bytes("une forme \xe9trange\n".encode("latin-1"))
    f["blocker"].write_text("a file, not a folder")
    f["bad_toml"].write_text("[strategy.zero-order\nneighbors = 2\n")
    f["latin1_toml"].write_bytes("neighbors = 2 # \xe9\n".encode("latin-1"))
    f["unknown_toml"].write_text("[strategy.zero-order]\nneighbours = 2\n")
    f["type_toml"].write_text('[strategy.zero-order]\nneighbors = "two"\n')
    f["range_toml"].write_text("[strategy.zero-order]\ncosine = 1.5\n")
    f["section_toml"].write_text("[strategy]\nzero-order = 5\n")
    f["other_toml"].write_text("[strategy.smc]\nparticles = 2\n")
    f["contra_toml"].write_text("[strategy.paths]\ndelta_f = 0.9\ndelta_b = 0.5\n")
    f["no_index"].mkdir()
    f["foreign_pipe"].mkdir()
    (f["foreign_pipe"] / "model_index.json").write_text('{"_class_name": "AudioLDMPipeline"}')
    return f


@pytest.fixture(scope="module", autouse=True)
def _in_a_scratch_folder(tmp_path_factory):
    """Relative paths a fuzzed value may name resolve in an empty scratch folder, not the repository."""
    before = Path.cwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(before)


def invoke(args: list[str], out: Path, model: str = "stub", verifier: str | None = VERIFIER):
    """`noisesearch run` on a cheap base (2 candidates x 2 steps) with ``args`` added last (they win)."""
    base = ["run", "--model", model, "--out", str(out)]
    if verifier:
        base += ["--verifier", verifier]
    if "--prompt" not in args and "--prompts-file" not in args:
        base += ["--prompt", "a red circle"]
    if "--budget" not in args and "--candidates" not in args:
        base += ["--candidates", "2"]
    if "--steps" not in args:
        base += ["--steps", "2"]
    return runner.invoke(app, base + args)


def assert_one_line_error(res, needle: str = "") -> None:
    """Exit 2, no traceback, and the cause on the last line of stderr, the only 'error:' line."""
    lines = [line for line in res.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert res.exit_code == 2, f"exit {res.exit_code}: {res.output}"
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    assert lines and lines[-1].startswith("error: "), res.stderr
    assert sum(line.startswith("error:") for line in lines) == 1, res.stderr
    assert needle in lines[-1], f"{needle!r} not in {lines[-1]!r}"


def assert_usage_error(res, option: str) -> None:
    """Exit 2 from the argument parser, naming the option; no traceback."""
    assert res.exit_code == 2, f"exit {res.exit_code}: {res.output}"
    assert "Traceback" not in res.output
    text = " ".join(res.stderr.split())
    assert f"'{option}'" in text and ("Invalid value" in text or "requires an argument" in text), res.stderr


# --------------------------------------------------------------------------- one bad value each

# (option values, needle); "{name}" is replaced by the path of files[name]
BAD = {
    # prompts
    "empty prompt": (["--prompt", ""], "--prompt is empty"),
    "blank prompt": (["--prompt", "  \t "], "--prompt is empty"),
    "prompts file missing": (["--prompts-file", "{missing}"], "cannot read prompts file"),
    "prompts file is a folder": (["--prompts-file", "{folder}"], "cannot read prompts file"),
    "prompts file empty": (["--prompts-file", "{empty}"], "contains no prompts"),
    "prompts csv without column": (["--prompts-file", "{nocolumn}"], "no 'prompt' column"),
    "prompts file not utf-8": (["--prompts-file", "{latin1}"], "cannot read prompts file"),
    "path that looks like markup": (["--prompts-file", "{folder}/[bold]x[/bold].txt"], "[bold]x[/bold].txt"),
    # names
    "model empty": (["--model", ""], "--model is empty"),
    "model unknown": (["--model", "no-such-model"], "unknown model 'no-such-model'"),
    "model hub id not cached": (["--model", "some-org/some-model"], "not in the local Hugging Face cache"),
    "model folder without index": (["--model", "{no_index}"], "not a diffusers pipeline folder"),
    "model folder of another pipeline": (["--model", "{foreign_pipe}"], "holds a AudioLDMPipeline"),
    "strategy empty": (["--strategy", ""], "unknown strategy ''"),
    "strategy unknown": (["--strategy", "best-of-n"], "unknown strategy 'best-of-n'"),
    "verifier empty": (["--verifier", ""], "verifier spec '': at character 1 expected a verifier name"),
    "verifier unknown": (["--verifier", "clip-score"], "unknown verifier 'clip-score'"),
    "scheduler empty": (["--scheduler", ""], "unknown scheduler ''"),
    "scheduler unknown": (["--scheduler", "heun"], "unknown scheduler 'heun'"),
    # numbers
    "budget zero": (["--budget", "0"], "budget must be a positive"),
    "budget negative": (["--budget", "-40"], "budget must be a positive"),
    "candidates zero": (["--candidates", "0"], "candidates must be a positive"),
    "candidates negative": (["--candidates", "-3"], "candidates must be a positive"),
    "steps zero": (["--steps", "0"], "steps must be a positive integer"),
    "steps negative": (["--steps", "-5"], "steps must be a positive integer"),
    "steps huge": (["--steps", "10001"], "at most 10000"),
    "steps astronomic": (["--steps", str(10**30)], "steps must be a positive integer"),
    "guidance negative": (["--guidance", "-1"], "guidance must be a finite number >= 0"),
    "guidance nan": (["--guidance", "nan"], "guidance must be a finite number >= 0"),
    "guidance inf": (["--guidance", "inf"], "guidance must be a finite number >= 0"),
    "height zero": (["--height", "0"], "height must be an integer from 8"),
    "height tiny": (["--height", "7"], "height must be an integer from 8"),
    "height huge": (["--height", "100000000"], "height must be an integer from 8 to 16384"),
    "width negative": (["--width", "-64"], "width must be an integer from 8"),
    "width huge": (["--width", "16385"], "width must be an integer from 8 to 16384"),
    "seed negative": (["--seed", "-1"], "--seed must be >= 0"),
    "seed beyond 64 bits": (["--seed", str(2**64)], "--seed must be >= 0 and < 2**63"),
    "max-batch zero": (["--max-batch", "0"], "max_batch must be a positive integer"),
    "max-batch negative": (["--max-batch", "-8"], "max_batch must be a positive integer"),
    "max-batch not a number": (["--max-batch", "all"], "max_batch must be a positive integer or 'auto'"),
    "top-k zero": (["--top-k", "0"], "--top-k must be >= 1"),
    "top-k negative": (["--top-k", "-2"], "--top-k must be >= 1"),
    # output folder
    "out under a file": (["--out", "{blocker}/sub"], "which is a file, not a folder"),
    "out is a file": (["--out", "{blocker}"], "is a file, not a folder"),
    # strategy config files
    "strategy config missing": (
        ["--strategy", "zero-order", "--strategy-config", "{missing}"],
        "cannot read strategy config",
    ),
    "strategy config is a folder": (
        ["--strategy", "zero-order", "--strategy-config", "{folder}"],
        "cannot read strategy config",
    ),
    "strategy config bad toml": (["--strategy", "zero-order", "--strategy-config", "{bad_toml}"], "is not valid TOML"),
    "strategy config not utf-8": (["--strategy", "zero-order", "--strategy-config", "{latin1_toml}"], "not UTF-8"),
    "strategy config unknown option": (
        ["--strategy", "zero-order", "--strategy-config", "{unknown_toml}"],
        "has no option neighbours",
    ),
    "strategy config wrong type": (
        ["--strategy", "zero-order", "--strategy-config", "{type_toml}"],
        "needs a int, got 'two'",
    ),
    "strategy config out of range": (
        ["--strategy", "zero-order", "--strategy-config", "{range_toml}"],
        "cosine must be in [0, 1)",
    ),
    "strategy config section not a table": (
        ["--strategy", "zero-order", "--strategy-config", "{section_toml}"],
        "must be a table",
    ),
    "strategy config for another strategy": (
        ["--strategy", "zero-order", "--strategy-config", "{other_toml}"],
        "has no [strategy.zero-order] table",
    ),
    # strategy flags
    "strategy flag unknown": (["--strategy", "zero-order", "--zo-neighbours", "3"], "unknown option '--zo-neighbours'"),
    "strategy flag of another strategy": (
        ["--zo-neighbors", "3"],
        "unknown option '--zo-neighbors' for strategy 'random'",
    ),
    "unknown top-level flag": (["--budgte", "40"], "unknown option '--budgte'"),
    "stray positional word": (["extra"], "unknown option 'extra'"),
    "strategy flag without value": (["--strategy", "zero-order", "--zo-neighbors"], "needs a value"),
    "strategy flag empty value": (["--strategy", "zero-order", "--zo-neighbors="], "needs a int, got ''"),
    "strategy flag not a number": (["--strategy", "zero-order", "--zo-neighbors", "many"], "needs a int, got 'many'"),
    "strategy flag float for int": (["--strategy", "zero-order", "--zo-neighbors", "2.5"], "needs a int"),
    "strategy flag zero": (["--strategy", "zero-order", "--zo-neighbors", "0"], "neighbors must be a positive integer"),
    "strategy flag out of range": (["--strategy", "zero-order", "--zo-cosine", "1.5"], "cosine must be in [0, 1)"),
    "strategy flag nan": (["--strategy", "smc", "--smc-lambda", "nan"], "lam must be a finite number"),
    "strategy switch with a value": (["--strategy", "zero-order", "--zo-restart=false"], "takes no value"),
    "strategy choice unknown": (
        ["--strategy", "smc", "--smc-resampler", "stratified"],
        "unknown resampler 'stratified'",
    ),
    # contradictions
    "budget and candidates": (
        ["--budget", "40", "--candidates", "2"],
        "either a budget in NFEs or a number of candidates",
    ),
    "prompt and prompts file": (
        ["--prompt", "x", "--prompts-file", "{empty}"],
        "exactly one of --prompt or --prompts-file",
    ),
    "budget below one sample": (["--budget", "3", "--steps", "5"], "smaller than one full sample"),
    "flow scheduler on a noise-prediction model": (["--scheduler", "flow-euler"], "needs a flow-matching model"),
    "gradient with a non-differentiable verifier": (["--strategy", "gradient"], "needs a differentiable verifier"),
    "smc start after end": (
        ["--strategy", "smc", "--smc-start", "0.9", "--smc-end", "0.1"],
        "need 0 <= start <= end <= 1",
    ),
    "paths delta_b below delta_f": (
        ["--strategy", "paths", "--paths-delta-f", "0.9", "--paths-delta-b", "0.5"],
        "must exceed delta_f",
    ),
    "paths contradictory config file": (
        ["--strategy", "paths", "--strategy-config", "{contra_toml}"],
        "must exceed delta_f",
    ),
}

# validated while loading a real model: checked against the embedded toyworld model (before its weights are read)
BAD_LOADING = {
    "device empty": (["--device", ""], "unknown device ''"),
    "device unknown": (["--device", "gpu"], "unknown device 'gpu'"),
    "device meta": (["--device", "meta"], "unsupported device 'meta'"),
    "device xpu": (["--device", "xpu"], "unsupported device 'xpu'"),
    "device negative index": (["--device", "cuda:-1"], "unknown device 'cuda:-1'"),
    "device gpu number out of range": (["--device", "cuda:99"], ""),  # no GPU here, or not 100 of them
    "dtype empty": (["--dtype", ""], "unknown dtype ''"),
    "dtype unknown": (["--dtype", "fp8"], "unknown dtype 'fp8'"),
    "dtype fp16 on cpu": (["--device", "cpu", "--dtype", "fp16"], "fp16 is not supported on CPU"),
}

# rejected by the argument parser (click/typer) before the command runs
BAD_PARSE = {
    "budget not a number": (["--budget", "forty"], "--budget"),
    "budget float": (["--budget", "40.5"], "--budget"),
    "budget empty": (["--budget", ""], "--budget"),
    "candidates not a number": (["--candidates", "2x"], "--candidates"),
    "steps float": (["--steps", "1.5"], "--steps"),
    "steps missing value": (["--steps"], "--steps"),
    "guidance not a number": (["--guidance", "strong"], "--guidance"),
    "height empty": (["--height", ""], "--height"),
    "width words": (["--width", "wide"], "--width"),
    "seed scientific": (["--seed", "1e3"], "--seed"),
    "top-k not a number": (["--top-k", "best"], "--top-k"),
}


def _fill(args: list[str], files: dict) -> list[str]:
    return [a.format(**{k: str(v) for k, v in files.items()}) for a in args]


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_value_exits_2_with_a_one_line_cause(case, files, tmp_path):
    args, needle = BAD[case]
    res = invoke(_fill(args, files), tmp_path / "out")
    assert_one_line_error(res, needle)


@pytest.mark.parametrize("case", sorted(BAD_LOADING))
def test_bad_device_or_dtype_exits_2_before_loading_weights(case, tmp_path, monkeypatch):
    import noisesearch.models.loading as models

    def no_loading(*a, **k):
        raise AssertionError("weights were loaded despite a bad --device/--dtype")

    monkeypatch.setattr(models, "_from_pretrained", no_loading)
    args, needle = BAD_LOADING[case]
    res = invoke(args, tmp_path / "out", model="toyworld", verifier="toyclip")
    assert_one_line_error(res, needle)


@pytest.mark.parametrize("case", sorted(BAD_PARSE))
def test_unparsable_value_is_a_usage_error_naming_the_option(case, tmp_path):
    args, option = BAD_PARSE[case]
    assert_usage_error(invoke(args, tmp_path / "out"), option)


def test_the_base_command_itself_runs(tmp_path):
    """Control: without a bad value the fuzz base is a valid, cheap run (so exit 2 comes from the value)."""
    res = invoke([], tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "report.json").is_file()


def test_huge_but_harmless_values_are_accepted(tmp_path):
    """A batch cap or a top-k far above the number of candidates is not an error: the run uses what exists."""
    res = invoke(["--max-batch", str(10**20), "--top-k", "1000000"], tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out").glob("best*.png")) == ["best.png", "best_2.png", "best_large.png"]


# --------------------------------------------------------------------------- random junk and combinations

NAME_OPTIONS = {
    "--strategy": lambda t: t not in _STRATEGIES,
    "--verifier": lambda t: t.strip() not in available_verifiers(),  # a spec may have spaces around it
    "--scheduler": lambda t: t not in SOLVERS,
    "--model": lambda t: t.strip() not in ("stub", "toyworld") and not t.startswith("tiny-random"),
}
JUNK = st.text(max_size=20)


def _is_valid_device(text: str) -> bool:
    try:
        resolve_device(text)
        return True
    except Exception:
        return False


@FUZZ
@given(st.sampled_from(sorted(NAME_OPTIONS)), JUNK)
def test_random_names_are_one_line_errors(tmp_path_factory, option, text):
    assume(NAME_OPTIONS[option](text))
    res = invoke([option, text], tmp_path_factory.mktemp("out"))
    assert_one_line_error(res)


@FUZZ
@given(st.sampled_from(["--device", "--dtype"]), JUNK)
def test_random_devices_and_dtypes_are_one_line_errors(tmp_path_factory, option, text):
    import noisesearch.models.loading as models

    if option == "--device":
        assume(text not in ("auto",) and not _is_valid_device(text))
    else:
        assume(text not in ("auto", "fp32", "float32", "bf16", "bfloat16"))
    saved = models._from_pretrained
    models._from_pretrained = lambda *a, **k: pytest.fail("weights were loaded despite a bad value")
    try:
        res = invoke(
            [option, text, "--device" if option == "--dtype" else "--dtype", "cpu" if option == "--dtype" else "fp32"],
            tmp_path_factory.mktemp("out"),
            model="toyworld",
            verifier="toyclip",
        )
    finally:
        models._from_pretrained = saved
    assert_one_line_error(res)


BAD_INTS = {
    "--budget": st.integers(max_value=0),
    "--candidates": st.integers(max_value=0),
    "--steps": st.one_of(st.integers(max_value=0), st.integers(min_value=10_001)),
    "--height": st.one_of(st.integers(max_value=7), st.integers(min_value=16_385)),
    "--width": st.one_of(st.integers(max_value=7), st.integers(min_value=16_385)),
    "--seed": st.one_of(st.integers(max_value=-1), st.integers(min_value=2**63)),
    "--max-batch": st.integers(max_value=0),
    "--top-k": st.integers(max_value=0),
}
BAD_FLOATS = {"--guidance": st.one_of(st.floats(max_value=-1e-9), st.sampled_from(["nan", "inf", "-inf"]))}
VALID_EXTRAS = st.lists(
    st.sampled_from(
        [
            ["--seed", "7"],
            ["--max-batch", "1"],
            ["--top-k", "2"],
            ["--strategy", "zero-order"],
            ["--guidance", "0"],
            ["--scheduler", "euler"],
            ["--height", "16"],
            ["--strategy", "random"],
        ]
    ),
    max_size=3,
)


@FUZZ
@given(st.data())
def test_random_combinations_of_bad_values_are_one_line_errors(tmp_path_factory, data):
    """1-3 bad numeric values (random magnitudes, incl. beyond 64 bits) mixed with valid options."""
    options = data.draw(
        st.lists(st.sampled_from(sorted(BAD_INTS) + sorted(BAD_FLOATS)), min_size=1, max_size=3, unique=True)
    )
    args = [w for extra in data.draw(VALID_EXTRAS) for w in extra]
    for option in options:
        value = data.draw(BAD_INTS[option] if option in BAD_INTS else BAD_FLOATS[option])
        args += [option, value if isinstance(value, str) else repr(value)]
    assert_one_line_error(invoke(args, tmp_path_factory.mktemp("out")))


@FUZZ
@given(st.data())
def test_random_combinations_of_table_cases_are_one_line_errors(files, tmp_path_factory, data):
    """Two or three of the single bad inputs above together still give exactly one cause."""
    cases = data.draw(st.lists(st.sampled_from(sorted(BAD)), min_size=2, max_size=3, unique=True))
    args = [w for case in cases for w in _fill(BAD[case][0], files)]
    res = invoke(args, tmp_path_factory.mktemp("out"))
    if res.exit_code == 0:  # a later value overrode an earlier bad one (e.g. two --strategy flags)
        assume(False)
    assert_one_line_error(res)


# --------------------------------------------------------------------------- bad files
# Every command that reads or writes a file gets, in one slot at a time, a file that is empty,
# truncated, binary, of the wrong JSON/TOML shape, a folder where a file belongs (and the reverse),
# missing, or unwritable. Each must be refused in one line of at most 300 characters, with nothing
# written anywhere and nothing in the example's folder changed.

FILE_FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
#: bytes that are never UTF-8 text (0xFF never occurs in UTF-8) followed by random bytes
BINARY = st.binary(max_size=64).map(lambda b: b"\x89PNG\xff\xfe" + b)


def _unwritable_folder(root: Path) -> Path | None:
    """A folder nobody can write: a read-only folder, or /sys for root (whom permission bits do not stop)."""
    if os.geteuid() != 0:
        folder = root / "read-only"
        folder.mkdir(exist_ok=True)
        folder.chmod(0o555)
        return folder
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir="/sys"):
            return None  # pragma: no cover - /sys writable: the sub-case is skipped (assume below)
    except OSError:
        return Path("/sys")


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def _bad_file(path: Path, kind: str, valid: bytes, data, wrong_shape=None) -> str:
    """Puts a bad file of ``kind`` at ``path``; returns the argument naming it."""
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":  # every strict prefix of ``valid`` short of its trailing whitespace is invalid
        body = valid.rstrip()  # dropping only a final newline would leave a valid file
        path.write_bytes(body[: data.draw(st.integers(0, len(body) - 1), label="cut")])
    elif kind == "binary":
        path.write_bytes(data.draw(BINARY, label="bytes"))
    elif kind == "wrong shape":
        path.write_bytes(wrong_shape(data))
    elif kind == "folder":
        path.mkdir()
    elif kind != "missing":
        raise AssertionError(kind)
    return str(path)


def _bad_output(root: Path, kind: str, name: str) -> str:
    """An output path that cannot be used: ``kind`` is file, below file, unwritable or empty."""
    if kind == "empty":
        return ""
    if kind == "file":
        (root / name).write_text("earlier work")
        return str(root / name)
    if kind == "below file":
        (root / "notes.txt").write_text("earlier work")
        return str(root / "notes.txt" / name)
    folder = _unwritable_folder(root)
    assume(folder is not None)
    return str(folder / name)


def assert_refused_cleanly(res, root: Path, before: dict) -> None:
    assert_one_line_error(res)
    line = [x for x in res.stderr.splitlines() if x.startswith("error:")][0]
    assert len(line) <= 300, f"{len(line)} characters: {line[:400]}"
    assert _tree(root) == before, "a refused command changed files"


def _fresh(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("badfiles")
    os.chdir(root)  # relative outputs (an empty --out) would land here, where the check looks
    return root


def _sweep_toml() -> bytes:
    # the required key search_verifiers comes last: every strict prefix lacks it or cuts a value
    return f'prompts = "prompts.txt"\nmodels = ["stub"]\ndevice = "cpu"\nbudgets = [20]\nsearch_verifiers = ["{VERIFIER}"]'.encode()


# an empty strategy config is valid (no options): it is not among the bad files
RUN_SLOTS = (
    [("prompts", k) for k in ("empty", "binary", "folder", "missing")]
    + [("strategy config", k) for k in ("binary", "folder", "missing", "wrong shape")]
    + [("npnet checkpoint", k) for k in ("empty", "truncated", "binary", "folder", "missing", "wrong shape")]
    + [("out", k) for k in ("file", "below file", "unwritable", "empty")]
)


@FILE_FUZZ
@given(st.sampled_from(RUN_SLOTS), st.data())
def test_run_refuses_bad_files_in_one_line_and_writes_nothing(tmp_path_factory, slot, data):
    from noisesearch.npnet.prior import TOYWORLD_NPNET

    where, kind = slot
    root = _fresh(tmp_path_factory)
    args = ["--out", str(root / "out")]
    if where == "prompts":
        args += ["--prompts-file", _bad_file(root / "prompts.txt", kind, b"a red circle\n", data)]
    elif where == "strategy config":

        def wrong(d):  # a TOML document whose strategy table holds values of the wrong type
            value = d.draw(st.text(alphabet="abxyz", max_size=5) | st.lists(st.integers(), max_size=2))
            return f"[strategy.zero-order]\nneighbors = {json.dumps(value)}\n".encode()

        args += ["--strategy", "zero-order", "--strategy-config", _bad_file(root / "zo.toml", kind, b"", data, wrong)]
    elif where == "npnet checkpoint":

        def wrong(d):  # a safetensors file of random tensors and no NPNet config
            from safetensors.torch import save

            n = d.draw(st.integers(1, 3))
            return save({f"t{i}": torch.zeros(d.draw(st.integers(0, 4))) for i in range(n)})

        args += [
            "--prior",
            "npnet",
            "--npnet-checkpoint",
            _bad_file(root / "golden.safetensors", kind, TOYWORLD_NPNET.read_bytes(), data, wrong),
        ]
    else:
        args = ["--out", _bad_output(root, kind, "out")]
    before = _tree(root)
    assert_refused_cleanly(invoke(args, root / "unused"), root, before)


SWEEP_SLOTS = (
    [("config", k) for k in ("empty", "truncated", "binary", "folder", "missing", "wrong shape")]
    + [("prompts", k) for k in ("empty", "binary", "folder", "missing")]
    + [("out", k) for k in ("file", "below file", "unwritable", "empty")]
    + [("shard", k) for k in ("binary", "wrong shape")]
)


def _wrong_sweep_toml(data) -> bytes:
    """The valid config with one value replaced by a random value of another shape."""
    key = data.draw(st.sampled_from(["budgets", "models", "search_verifiers", "prompts"]), label="key")
    # never a valid alternative (a scalar or list may be one: budgets = 30, models = "stub")
    value = data.draw(
        st.booleans()
        | st.floats(allow_nan=False)
        | st.dictionaries(st.text(max_size=4), st.integers(), max_size=2)
        | st.lists(st.lists(st.integers(), max_size=2), min_size=1, max_size=2),
        label="value",
    )
    text = _sweep_toml().decode()
    lines = [f"{key} = {json.dumps(value)}" if line.startswith(f"{key} =") else line for line in text.splitlines()]
    return "\n".join(lines).encode()


@FILE_FUZZ
@given(st.sampled_from(SWEEP_SLOTS), st.data())
def test_sweep_refuses_bad_files_in_one_line_and_writes_nothing(tmp_path_factory, slot, data):
    where, kind = slot
    root = _fresh(tmp_path_factory)
    (root / "prompts.txt").write_text("a red circle\n")
    config = root / "sweep.toml"
    config.write_bytes(_sweep_toml())
    out = str(root / "out")
    if where == "config":
        config.unlink()
        _bad_file(config, kind, _sweep_toml(), data, _wrong_sweep_toml)
    elif where == "prompts":
        (root / "prompts.txt").unlink()
        _bad_file(root / "prompts.txt", kind, b"", data)
    elif where == "out":
        out = _bad_output(root, kind, "out")
    else:  # an earlier sweep folder whose shard was damaged outside noisesearch
        (root / "out" / "shards").mkdir(parents=True)
        bad = data.draw(BINARY) if kind == "binary" else (json.dumps(data.draw(JSON_VALUES)) + "\n").encode()
        (root / "out" / "shards" / "rank-0-of-1.jsonl").write_bytes(b'{"key": "x"}\n' + bad + b"\n")
    before = _tree(root)
    assert_refused_cleanly(runner.invoke(app, ["sweep", str(config), "--out", out]), root, before)


@pytest.fixture(scope="module")
def finished_sweep_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("finished")
    (folder / "prompts.txt").write_text("a red circle\ntwo blue squares\n")
    (folder / "sweep.toml").write_bytes(_sweep_toml())
    res = runner.invoke(app, ["sweep", str(folder / "sweep.toml"), "--out", str(folder / "out")])
    assert res.exit_code == 0, res.output
    return folder / "out"


REPORT_SLOTS = (
    [("results", k) for k in ("empty", "truncated", "binary", "folder", "wrong shape")]
    + [("metadata", k) for k in ("truncated", "binary", "folder", "wrong shape")]
    + [("results dir", k) for k in ("missing", "file")]
    + [("out", k) for k in ("file", "below file", "unwritable", "empty")]
)


@FILE_FUZZ
@given(st.sampled_from(REPORT_SLOTS), st.data())
def test_report_refuses_bad_files_in_one_line_and_writes_nothing(tmp_path_factory, finished_sweep_dir, slot, data):
    import shutil

    where, kind = slot
    root = _fresh(tmp_path_factory)
    results = root / "sweep"
    shutil.copytree(finished_sweep_dir, results)
    args = ["report", str(results)]
    if where == "results":
        valid = (results / "results.jsonl").read_bytes()
        first_line = valid[: valid.index(b"\n") + 1]  # any strict prefix of one line holds no complete row
        (results / "results.jsonl").unlink()

        def wrong(d):
            return "".join(json.dumps(v) + "\n" for v in d.draw(st.lists(JSON_VALUES, min_size=1, max_size=3))).encode()

        _bad_file(results / "results.jsonl", kind, first_line, data, wrong)
        assume(kind != "wrong shape" or (results / "results.jsonl").read_bytes().strip())
    elif where == "metadata":
        valid = (results / "sweep_config.json").read_bytes()
        (results / "sweep_config.json").unlink()
        _bad_file(
            results / "sweep_config.json",
            kind,
            valid,
            data,
            lambda d: json.dumps(d.draw(JSON_VALUES.filter(lambda v: not isinstance(v, dict)))).encode(),
        )
    elif where == "results dir":
        shutil.rmtree(results)
        if kind == "file":
            results.write_text("not a sweep")
    else:
        args += ["--out", _bad_output(root, kind, "report")]
    before = _tree(root)
    assert_refused_cleanly(runner.invoke(app, args), root, before)


CONVERT_SLOTS = [("src", k) for k in ("empty", "truncated", "binary", "folder", "missing", "wrong shape")] + [
    ("dst", k) for k in ("file as folder", "below file", "unwritable", "empty", "suffix")
]


@pytest.fixture(scope="module")
def official_toyworld(tmp_path_factory) -> Path:
    from noisesearch.npnet.checkpoint import flat_to_official
    from noisesearch.npnet.model import NPNet, preset

    path = tmp_path_factory.mktemp("official") / "official.pth"
    torch.save(flat_to_official(NPNet(preset("toyworld")).state_dict()), path)
    return path


@FILE_FUZZ
@given(st.sampled_from(CONVERT_SLOTS), st.data())
def test_npnet_convert_refuses_bad_files_in_one_line_and_writes_nothing(
    tmp_path_factory, official_toyworld, slot, data
):
    where, kind = slot
    official_toyworld_bytes = official_toyworld.read_bytes()
    root = _fresh(tmp_path_factory)
    src, dst = root / "official.pth", str(root / "npnet.safetensors")
    if where == "src":

        def wrong(d):  # a plain torch file of the wrong structure (no official entries)
            import io

            buf = io.BytesIO()
            torch.save(
                d.draw(st.dictionaries(st.text(max_size=5), st.integers() | st.just(torch.zeros(2)), max_size=3)), buf
            )
            return buf.getvalue()

        _bad_file(src, kind, official_toyworld_bytes, data, wrong)
    else:
        src.write_bytes(official_toyworld_bytes)
        if kind == "file as folder":
            (root / "npnet.safetensors").mkdir()
        elif kind == "suffix":
            dst = str(root / "npnet.pth")
        else:
            dst = _bad_output(root, kind, "npnet.safetensors")
    before = _tree(root)
    assert_refused_cleanly(
        runner.invoke(app, ["npnet", "convert", str(src), dst, "--preset", "toyworld"]), root, before
    )
