"""Bad files and output places given to the commands that read or write them.

Every refusal must be: exit code 2, one ``error:`` line of at most 300 characters that names the
cause and the file, no traceback, nothing written anywhere, and nothing earlier in an output folder
changed. Runs in process on the weightless ``stub`` model with a cheap registered verifier (the
embedded ``toyworld`` model only where a case is about it).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from noisesearch.cli import app
from noisesearch.io.outputs import OutputError, check_output_dir, check_output_file
from noisesearch.io.usertext import abbreviate, quote
from noisesearch.models import TOYWORLD_DIR
from noisesearch.request import ensure_registrations
from noisesearch.verifiers import CallableVerifier, register_verifier

VERIFIER = "files-red"
PICKY = "files-picky"


@register_verifier(VERIFIER, "tests: mean of the red channel")
def _red(device="cpu") -> CallableVerifier:
    return CallableVerifier(lambda images, prompts: images[:, 0].mean(dim=(1, 2)), name=VERIFIER)


class _Picky(CallableVerifier):
    """Scores any image, but reads only prompts without the word 'hello' (like toydetect's grammar)."""

    def check_prompt(self, prompt: str) -> None:
        if "hello" in prompt.split():
            raise ValueError(f"{PICKY} cannot read {quote(prompt)}")


@register_verifier(PICKY, "tests: refuses prompts with the word 'hello'")
def _picky(device="cpu") -> CallableVerifier:
    return _Picky(lambda images, prompts: images[:, 1].mean(dim=(1, 2)), name=PICKY)


ensure_registrations()
runner = CliRunner()
HAS_TOYWORLD = (TOYWORLD_DIR / "model_index.json").exists()


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder that cannot be written. As root, permission bits do not stop writes: use /sys then
    (a kernel file system where nobody creates files), or skip when even that is writable."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    try:
        with tempfile.NamedTemporaryFile(dir="/sys"):
            pass
    except OSError:
        return Path("/sys")
    pytest.skip("running as root and /sys is writable: no unwritable folder to test with")


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under ``folder``, by relative path."""
    out: dict[str, bytes | None] = {}
    for p in sorted(folder.rglob("*")):
        out[str(p.relative_to(folder))] = None if p.is_dir() else p.read_bytes()
    return out


def assert_refused(res, *needles: str) -> str:
    """Exit 2, no traceback, one ``error:`` line of at most 300 characters containing every needle."""
    lines = [line for line in res.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert res.exit_code == 2, f"exit {res.exit_code}: {res.output[-2000:]}"
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], res.stderr[-2000:]
    assert len(errors[0]) <= 300, f"{len(errors[0])} characters: {errors[0][:400]}"
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    return errors[0]


@pytest.fixture(autouse=True)
def _in_a_scratch_folder(tmp_path, monkeypatch):
    """Relative paths resolve in an empty scratch folder (so '--out ""' would write there)."""
    scratch = tmp_path / "cwd"
    scratch.mkdir()
    monkeypatch.chdir(scratch)
    return scratch


def run_args(out: str, *extra: str, prompt: str = "a red circle") -> list[str]:
    return [
        "run",
        "--model",
        "stub",
        "--verifier",
        VERIFIER,
        "--candidates",
        "2",
        "--steps",
        "2",
        "--prompt",
        prompt,
        "--out",
        out,
        *extra,
    ]


def write_sweep_config(folder: Path, prompts: list[str], **keys) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompts.txt").write_text("\n".join(prompts) + "\n")
    cfg = {
        "prompts": "prompts.txt",
        "models": ["stub"],
        "budgets": [20],
        "search_verifiers": [VERIFIER],
        "seeds": [0],
        "device": "cpu",
        **keys,
    }
    lines = [f"{k} = {json.dumps(v)}" for k, v in cfg.items()]
    path = folder / "sweep.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory) -> Path:
    """The output folder of a finished two-prompt sweep on the stub model."""
    folder = tmp_path_factory.mktemp("sweep")
    config = write_sweep_config(folder / "cfg", ["a red circle", "two blue squares"])
    res = runner.invoke(app, ["sweep", str(config), "--out", str(folder / "out")])
    assert res.exit_code == 0, res.output
    assert (folder / "out" / "results.jsonl").is_file()
    return folder / "out"


@pytest.fixture
def sweep_copy(finished_sweep, tmp_path) -> Path:
    import shutil

    target = tmp_path / "sweep-out"
    shutil.copytree(finished_sweep, target)
    return target


# --------------------------------------------------------------------------- helpers themselves


def test_abbreviate_and_quote_cut_long_text_and_keep_short_text():
    assert abbreviate("a red circle") == "a red circle"
    assert quote("a red circle") == "'a red circle'"
    long = "x" * 100_000
    assert abbreviate(long) == "x" * 80 + "… (100,000 characters)"
    assert quote(long) == repr("x" * 80) + "… (100,000 characters)"
    assert abbreviate("two\nlines") == "two lines"


def test_output_checks_refuse_without_creating_anything(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "folder.safetensors").mkdir()
    before = snapshot(tmp_path)
    cases = [
        (lambda: check_output_dir(""), "--out is empty"),
        (lambda: check_output_dir(tmp_path / "file.txt"), "is a file, not a folder"),
        (lambda: check_output_dir(tmp_path / "file.txt" / "sub" / "deeper"), "which is a file, not a folder"),
        (lambda: check_output_file("", "--out"), "--out is empty"),
        (lambda: check_output_file(tmp_path / "folder.safetensors"), "is a folder"),
        (lambda: check_output_file(tmp_path / "file.txt" / "x.safetensors"), "which is a file, not a folder"),
        (lambda: check_output_file(tmp_path / "x.pth", suffix=".safetensors"), "must end in .safetensors"),
        (lambda: check_output_dir(tmp_path, files=("folder.safetensors",)), "is a folder where a file is written"),
        (lambda: check_output_dir(tmp_path, folders=("file.txt",)), "is a file where a folder is written"),
    ]
    for call, needle in cases:
        with pytest.raises(OutputError, match=needle.replace(".", r"\.")):
            call()
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert snapshot(tmp_path) == before  # nothing created, not even the accepted folder


def test_output_checks_refuse_an_unwritable_place(tmp_path):
    folder = unwritable_folder(tmp_path)
    with pytest.raises(OutputError, match="not writable"):
        check_output_dir(folder / "new")
    with pytest.raises(OutputError, match="cannot write to"):
        check_output_file(folder / "npnet.safetensors")


# --------------------------------------------------------------------------- the sixteen cases
# tracebacks


def test_zero_byte_npnet_checkpoint_is_named(tmp_path, _in_a_scratch_folder):
    (tmp_path / "golden.safetensors").write_bytes(b"")
    res = runner.invoke(
        app, run_args("out", "--prior", "npnet", "--npnet-checkpoint", str(tmp_path / "golden.safetensors"))
    )
    assert_refused(res, "golden.safetensors", "empty (0 bytes)")
    assert snapshot(_in_a_scratch_folder) == {}


def test_corrupt_npnet_checkpoint_and_a_folder_in_its_place_are_named(tmp_path, _in_a_scratch_folder):
    (tmp_path / "golden.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    (tmp_path / "ckpt").mkdir()
    res = runner.invoke(
        app, run_args("out", "--prior", "npnet", "--npnet-checkpoint", str(tmp_path / "golden.safetensors"))
    )
    assert_refused(res, "golden.safetensors", "not a readable safetensors file")
    res = runner.invoke(app, run_args("out", "--prior", "npnet", "--npnet-checkpoint", str(tmp_path / "ckpt")))
    assert_refused(res, "ckpt", "is a folder")
    assert snapshot(_in_a_scratch_folder) == {}


def test_report_refuses_rows_of_another_shape_naming_the_file_and_line(sweep_copy):
    (sweep_copy / "results.jsonl").write_text(json.dumps({"key": "k1", "prompt": "a red circle", "score": 1.0}) + "\n")
    before = snapshot(sweep_copy)
    assert_refused(runner.invoke(app, ["report", str(sweep_copy)]), "results.jsonl:1", "missing 'model'")
    assert snapshot(sweep_copy) == before


@pytest.mark.parametrize(
    "row, needle",
    [
        ([1, 2, 3], "a JSON list, not an object"),
        (
            {
                "key": "k",
                "prompt": "p",
                "model": "m",
                "strategy": "s",
                "search_verifier": "v",
                "budget_nfe": "20",
                "seed": 0,
                "accounting": {},
            },
            "'budget_nfe' is not an integer",
        ),
        (
            {
                "key": "k",
                "prompt": "p",
                "model": "m",
                "strategy": "s",
                "search_verifier": "v",
                "budget_nfe": 20,
                "seed": 0,
                "accounting": {},
                "eval": {"x": "high"},
            },
            "eval.x is not a number",
        ),
    ],
)
def test_report_names_each_kind_of_wrong_row(sweep_copy, row, needle):
    (sweep_copy / "results.jsonl").write_text(json.dumps(row) + "\n")
    assert_refused(runner.invoke(app, ["report", str(sweep_copy)]), "results.jsonl:1", needle)


def test_report_out_that_is_a_file_is_refused(sweep_copy, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    before = snapshot(tmp_path)
    assert_refused(
        runner.invoke(app, ["report", str(sweep_copy), "--out", str(notes)]), "notes.txt", "is a file, not a folder"
    )
    assert snapshot(tmp_path) == before


def test_report_out_in_an_unwritable_folder_is_refused(sweep_copy, tmp_path):
    folder = unwritable_folder(tmp_path)
    before = snapshot(sweep_copy)
    assert_refused(
        runner.invoke(app, ["report", str(sweep_copy), "--out", str(folder / "report")]), "report", "not writable"
    )
    assert snapshot(sweep_copy) == before
    assert not (folder / "report").exists()


@pytest.fixture
def official_file(tmp_path) -> Path:
    """A random-weight NPNet in the official nested layout (toyworld size)."""
    from noisesearch.npnet.checkpoint import flat_to_official
    from noisesearch.npnet.model import NPNet, preset

    path = tmp_path / "official.pth"
    torch.save(flat_to_official(NPNet(preset("toyworld")).state_dict()), path)
    return path


def test_convert_into_an_existing_folder_is_refused(official_file, tmp_path):
    (tmp_path / "out.safetensors").mkdir()
    before = snapshot(tmp_path)
    res = runner.invoke(
        app, ["npnet", "convert", str(official_file), str(tmp_path / "out.safetensors"), "--preset", "toyworld"]
    )
    assert_refused(res, "out.safetensors", "is a folder")
    assert snapshot(tmp_path) == before


def test_convert_below_a_regular_file_is_refused(official_file, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    before = snapshot(tmp_path)
    res = runner.invoke(
        app,
        [
            "npnet",
            "convert",
            str(official_file),
            str(tmp_path / "notes.txt" / "npnet.safetensors"),
            "--preset",
            "toyworld",
        ],
    )
    assert_refused(res, "notes.txt", "which is a file, not a folder")
    assert snapshot(tmp_path) == before


def test_convert_into_an_unwritable_folder_is_refused(official_file, tmp_path):
    folder = unwritable_folder(tmp_path)
    res = runner.invoke(
        app, ["npnet", "convert", str(official_file), str(folder / "npnet.safetensors"), "--preset", "toyworld"]
    )
    assert_refused(res, "npnet.safetensors", "not writable")
    assert not (folder / "npnet.safetensors").exists()


def test_convert_write_errors_are_one_line(official_file, tmp_path, monkeypatch):
    """A failure while writing (disk full, a folder appearing after the check) is named, not a traceback."""
    import noisesearch.npnet.checkpoint as checkpoint

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full)
    res = runner.invoke(
        app, ["npnet", "convert", str(official_file), str(tmp_path / "npnet.safetensors"), "--preset", "toyworld"]
    )
    assert_refused(res, "npnet.safetensors", "No space left on device")
    assert not list(tmp_path.glob("npnet.safetensors*"))  # no file, no temporary left behind


# accepted where it should be refused


def test_empty_out_is_refused_and_writes_nothing(_in_a_scratch_folder):
    assert_refused(runner.invoke(app, run_args("")), "--out is empty")
    assert snapshot(_in_a_scratch_folder) == {}


def test_sweep_dry_run_checks_model_names(tmp_path):
    config = write_sweep_config(tmp_path / "cfg", ["a red circle"], models=["stub", "toyworld-v2"])
    res = runner.invoke(app, ["sweep", str(config), "--dry-run", "--out", str(tmp_path / "out")])
    assert_refused(res, "'models'", "unknown model 'toyworld-v2'")
    assert not (tmp_path / "out").exists()


def test_sweep_checks_hub_ids_and_folders_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    config = write_sweep_config(tmp_path / "cfg", ["a red circle"], models=["some-org/some-model"])
    assert_refused(
        runner.invoke(app, ["sweep", str(config), "--dry-run"]),
        "some-org/some-model",
        "not in the local Hugging Face cache",
    )
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "model_index.json").write_text("{half")
    config = write_sweep_config(tmp_path / "cfg2", ["a red circle"], models=[str(tmp_path / "pipe")])
    assert_refused(runner.invoke(app, ["sweep", str(config), "--dry-run"]), "model_index.json", "not a readable")


@pytest.mark.skipif(not HAS_TOYWORLD, reason="embedded toyworld weights not built")
def test_a_huge_prompt_prints_a_short_readable_run(_in_a_scratch_folder):
    """A 100,000-character prompt: the summary, the progress line and no library warning echo it."""
    prompt = "a red circle " * 7700  # 100,100 characters
    res = runner.invoke(
        app,
        [
            "run",
            "--prompt",
            prompt,
            "--verifier",
            "toyclip",
            "--candidates",
            "2",
            "--steps",
            "2",
            "--out",
            "out",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output[-2000:]
    assert len(res.output) < 4000, f"{len(res.output)} characters of output"
    assert all(len(line) <= 80 for line in res.stdout.splitlines()), res.stdout
    assert "(100,099 characters)" in res.stdout  # the prompt shown cut, with its length (stripped)


@pytest.mark.skipif(not HAS_TOYWORLD, reason="embedded toyworld weights not built")
def test_a_huge_prompt_the_verifier_cannot_read_is_a_short_error(_in_a_scratch_folder):
    prompt = "hello " * 20_000
    res = runner.invoke(
        app, ["run", "--prompt", prompt, "--candidates", "2", "--steps", "2", "--out", "out", "--device", "cpu"]
    )
    assert_refused(res, "cannot parse prompt", "(119,999 characters)")
    assert snapshot(_in_a_scratch_folder) == {}


def test_summary_table_fits_80_columns():
    from rich.console import Console

    from noisesearch.api import search
    from noisesearch.cli.run import _summary_table
    from noisesearch.models import load_model

    adapter = load_model("stub")
    results = [
        search(adapter, p, verifier=VERIFIER, candidates=3, steps=2)
        for p in ("a red circle", "a green triangle left of a yellow circle, drawn large on a white page " * 3)
    ]
    console = Console(width=80, record=True, force_terminal=False)
    console.print(_summary_table(results))
    lines = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines)
    body = [line for line in lines if "a red circle" in line or "a green triangle" in line]
    assert len(body) == 2  # one line per prompt: nothing wraps


# error text wrong, unnamed or huge


def test_sweep_config_that_is_not_text_names_the_file(tmp_path):
    png = tmp_path / "plot.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    assert_refused(
        runner.invoke(app, ["sweep", str(png), "--out", str(tmp_path / "out")]), "plot.png", "is not UTF-8 TOML"
    )
    assert not (tmp_path / "out").exists()


def test_half_written_sweep_metadata_is_named(sweep_copy):
    text = (sweep_copy / "sweep_config.json").read_text()
    (sweep_copy / "sweep_config.json").write_text(text[: len(text) // 2])
    before = snapshot(sweep_copy)
    assert_refused(runner.invoke(app, ["report", str(sweep_copy)]), "sweep_config.json", "is not valid JSON")
    assert snapshot(sweep_copy) == before


def test_convert_from_a_folder_says_it_is_a_folder(tmp_path):
    (tmp_path / "SOME_FOLDER").mkdir()
    res = runner.invoke(app, ["npnet", "convert", str(tmp_path / "SOME_FOLDER"), str(tmp_path / "out.safetensors")])
    assert_refused(res, "SOME_FOLDER", "is a folder")
    assert not (tmp_path / "out.safetensors").exists()


# late failure, or damage to earlier results


def test_rejected_sweep_config_leaves_an_existing_sweep_untouched(sweep_copy, tmp_path):
    typo = write_sweep_config(tmp_path / "cfg", ["a red circle"], budgest=[20])
    before = snapshot(sweep_copy)
    assert_refused(
        runner.invoke(app, ["sweep", str(typo), "--out", str(sweep_copy)]), "budgest", "did you mean 'budgets'"
    )
    assert snapshot(sweep_copy) == before


@pytest.mark.parametrize(
    "verifiers",
    [
        {"search_verifiers": [PICKY]},
        {"search_verifiers": [VERIFIER], "eval_verifiers": [PICKY]},
    ],
)
def test_sweep_checks_every_prompt_against_every_verifier_before_writing(sweep_copy, tmp_path, verifiers):
    config = write_sweep_config(tmp_path / "cfg", ["a red circle", "hello world"], **verifiers)
    before = snapshot(sweep_copy)
    assert_refused(
        runner.invoke(app, ["sweep", str(config), "--out", str(sweep_copy)]), "prompt 2 of", "prompts.txt", PICKY
    )
    assert snapshot(sweep_copy) == before
    assert_refused(runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "new")]), "prompt 2 of")
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(not HAS_TOYWORLD, reason="embedded toyworld weights not built")
def test_sweep_with_an_embedded_world_verifier_refuses_a_foreign_prompt_up_front(tmp_path):
    config = write_sweep_config(tmp_path / "cfg", ["a red circle", "hello world"], search_verifiers=["toydetect"])
    res = runner.invoke(app, ["sweep", str(config), "--out", str(tmp_path / "out")])
    assert_refused(res, "prompt 2 of", "'toydetect'", "unexpected word 'hello'")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- library output


@pytest.mark.skipif(not HAS_TOYWORLD, reason="embedded toyworld weights not built")
def test_library_progress_bars_only_with_verbose(_in_a_scratch_folder):
    base = ["run", "--prompt", "a red circle", "--candidates", "2", "--steps", "2", "--device", "cpu"]
    quiet = runner.invoke(app, [*base, "--out", "quiet"])
    assert quiet.exit_code == 0, quiet.output
    assert "Loading pipeline components" not in quiet.output and "Loading weights" not in quiet.output
    loud = runner.invoke(app, [*base, "--out", "loud", "--verbose"])
    assert loud.exit_code == 0, loud.output
    assert "Loading pipeline components" in loud.output
    runner.invoke(app, [*base, "--out", "quiet-again"])  # leaves the libraries quiet for later tests
