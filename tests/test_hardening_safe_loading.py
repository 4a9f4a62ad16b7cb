"""Safe and strict loading: a crafted pickle that would run code is refused by every loader of
``.pt``-style files (and never runs), and checkpoints with wrong keys or shapes are refused with an
error naming the first mismatches.

The payload is a real exploit: unpickling it calls ``exec`` to write a marker file. The first test
shows it does run under a plain ``torch.load(weights_only=False)``; every other test checks that our
loaders raise a clear one-line ``ValueError`` and that the marker never appears.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from noisesearch.cli import app
from noisesearch.io.checkpoints import load_weights
from noisesearch.testing import tiny_open_clip

TINY_CLIP = "nstest-hardening-clip"
TINY_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


class _RunsCode:
    """Unpickling this calls ``exec``, which writes ``marker``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def write_payload(path: Path, marker: Path, fmt: str = "torch") -> Path:
    """A checkpoint-looking file whose unpickling runs code: ``torch.save`` zip layout or a bare pickle."""
    obj = {"state_dict": {"weight": _RunsCode(marker)}, "w": _RunsCode(marker)}
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torch":
        torch.save(obj, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    return path


def assert_one_error_line(res, needle: str) -> None:
    """Exit 2; the cause is the last line of stderr, the only one starting with 'error:'; no traceback
    (libraries' progress bars may precede it)."""
    lines = [line for line in res.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], res.stderr
    assert needle in lines[-1], res.stderr


def assert_refused(err: pytest.ExceptionInfo, marker: Path) -> None:
    """A one-line ValueError that says the file is not plain tensors; the payload never ran."""
    msg = str(err.value)
    assert err.type is ValueError, f"{err.type.__name__}: {msg}"
    assert "weights_only=True" in msg and "\n" not in msg and "\x1b" not in msg, msg
    assert not marker.exists(), "the crafted pickle ran code"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A registered tiny open_clip architecture and its random-weight model."""
    d = tmp_path_factory.mktemp("clipcfg")
    return tiny_open_clip(TINY_CLIP, TINY_CLIP_CFG, d)


def test_the_payload_really_runs_code_when_unpickled_unsafely(tmp_path):
    """Control: the refusals below are meaningful because the payload works."""
    marker = tmp_path / "marker"
    for fmt, unsafe_load in (("torch", lambda f: torch.load(f, weights_only=False)), ("pickle", pickle.load)):
        path = write_payload(tmp_path / f"evil-{fmt}.pt", marker, fmt)
        assert not marker.exists()
        with open(path, "rb") as f:
            unsafe_load(f)
        assert marker.read_text() == "pwned"
        marker.unlink()


@pytest.mark.parametrize("fmt", ["torch", "pickle"])
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_load_weights_refuses_pickled_code(tmp_path, suffix, fmt):
    marker = tmp_path / "marker"
    path = write_payload(tmp_path / f"model{suffix}", marker, fmt)
    with pytest.raises(Exception) as err:
        load_weights(path)
    assert_refused(err, marker)
    assert "weights-only unpickler" in str(err.value)  # the refused instruction is named, not torch's essay


def test_hps_loader_refuses_pickled_code(tmp_path, tiny_clip):
    from noisesearch.verifiers.hps import load_hps

    marker = tmp_path / "marker"
    write_payload(tmp_path / "HPS_v2_compressed.pt", marker)
    with pytest.raises(Exception) as err:
        load_hps("v2.0", tmp_path, model=TINY_CLIP)
    assert_refused(err, marker)


def test_imagereward_loader_refuses_pickled_code(tmp_path):
    from noisesearch.verifiers.imagereward import BlipTextConfig, BlipVisionConfig, load_imagereward

    marker = tmp_path / "marker"
    write_payload(tmp_path / "ImageReward.pt", marker)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "circle"]
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    text = BlipTextConfig(
        vocab_size=len(vocab) + 2,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
    )
    vision = BlipVisionConfig(image_size=32, patch_size=16, width=16, layers=1, heads=2)
    with pytest.raises(Exception) as err:
        load_imagereward(tmp_path / "ImageReward.pt", tokenizer=tmp_path / "tok", vision=vision, text=text)
    assert_refused(err, marker)


def test_aesthetic_loader_refuses_pickled_code(tmp_path):
    from noisesearch.verifiers.aesthetic import load_aesthetic

    marker = tmp_path / "marker"
    path = write_payload(tmp_path / "sac+logos+ava1-l14-linearMSE.pth", marker)
    with pytest.raises(Exception) as err:
        load_aesthetic(path)
    assert_refused(err, marker)


@pytest.mark.parametrize("suffix", [".pt", ".bin"])
def test_clipscore_loader_refuses_pickled_code(tmp_path, tiny_clip, suffix):
    from noisesearch.verifiers import load_verifier

    marker = tmp_path / "marker"
    path = write_payload(tmp_path / f"open_clip_model{suffix}", marker)
    with pytest.raises(Exception) as err:
        load_verifier("clipscore", model=TINY_CLIP, pretrained=str(path))
    assert_refused(err, marker)


def test_pickscore_loader_refuses_pickled_code(tmp_path):
    from transformers import CLIPConfig

    from noisesearch.verifiers.pickscore import load_pickscore

    marker = tmp_path / "marker"
    model = tmp_path / "model"
    model.mkdir()
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ),
        vision_config=dict(
            image_size=32,
            patch_size=16,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
        ),
        projection_dim=8,
    )
    cfg.save_pretrained(str(model))
    write_payload(model / "pytorch_model.bin", marker)
    proc = tmp_path / "processor"  # only resolved (file presence) before the weights are read
    proc.mkdir()
    (proc / "preprocessor_config.json").write_text("{}")
    (proc / "vocab.json").write_text("{}")
    with pytest.raises(Exception) as err:
        load_pickscore(model, processor=proc)
    assert_refused(err, marker)


def test_toyworld_verifier_loader_refuses_a_pickle_posing_as_safetensors(tmp_path):
    from noisesearch.verifiers import load_verifier

    marker = tmp_path / "marker"
    path = write_payload(tmp_path / "toyclip.safetensors", marker)
    with pytest.raises(ValueError, match="as safetensors") as err:
        load_verifier("toyclip", path=str(path))
    assert "\n" not in str(err.value) and not marker.exists()


@pytest.fixture(scope="module")
def evil_pipeline(tmp_path_factory):
    """(folder, marker): a tiny diffusers pipeline whose UNet weights are a crafted pickle."""
    from noisesearch.testing.tiny import tiny_sd_pipeline

    d = tmp_path_factory.mktemp("evilpipe")
    folder = d / "pipe"
    tiny_sd_pipeline().save_pretrained(str(folder))
    for f in (folder / "unet").glob("diffusion_pytorch_model.*"):
        f.unlink()
    write_payload(folder / "unet" / "diffusion_pytorch_model.bin", d / "marker")
    return folder, d / "marker"


def test_model_loader_refuses_a_pipeline_with_pickled_code(evil_pipeline):
    from noisesearch.models import load_model

    folder, marker = evil_pipeline
    with pytest.raises(ValueError, match="weights-only unpickler: Unsupported global") as err:
        load_model(str(folder), device="cpu")
    assert "\n" not in str(err.value) and not marker.exists()


def test_cli_refuses_pickled_code_in_one_line(evil_pipeline, tmp_path, monkeypatch):
    """Through `noisesearch run`: a crafted pipeline folder and a crafted verifier head (via its
    environment variable) both end with exit 2 and one line on stderr; nothing runs."""
    folder, marker = evil_pipeline
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "run",
            "--prompt",
            "a red circle",
            "--model",
            str(folder),
            "--device",
            "cpu",
            "--verifier",
            "toyclip",
            "--out",
            str(tmp_path / "a"),
        ],
    )
    assert_one_error_line(res, "could not load the diffusers pipeline")
    assert "weights-only unpickler" in res.stderr
    head_marker = tmp_path / "head-marker"
    monkeypatch.setenv("NOISESEARCH_AESTHETIC_PATH", str(write_payload(tmp_path / "head.pth", head_marker)))
    res = runner.invoke(
        app,
        ["run", "--prompt", "a red circle", "--model", "stub", "--verifier", "aesthetic", "--out", str(tmp_path / "b")],
    )
    assert_one_error_line(res, "weights-only unpickler")
    assert not marker.exists() and not head_marker.exists()


# --------------------------------------------------------------------------- wrong keys / shapes


def test_clipscore_checkpoint_with_wrong_keys_names_them(tmp_path, tiny_clip):
    from noisesearch.verifiers.clip import CLIPScoreVerifier

    sd = dict(tiny_clip.state_dict())
    sd["visual.extra.weight"] = sd.pop("visual.proj")
    torch.save(sd, tmp_path / "renamed.pt")
    with pytest.raises(ValueError, match=r"1 missing \(visual\.proj\); 1 unexpected \(visual\.extra\.weight\)"):
        CLIPScoreVerifier.from_open_clip(TINY_CLIP, str(tmp_path / "renamed.pt"))
    sd = dict(tiny_clip.state_dict())
    sd["visual.proj"] = torch.zeros(3, 3)
    torch.save(sd, tmp_path / "reshaped.pt")
    with pytest.raises(ValueError, match=r"1 mis-shaped \(visual\.proj: file \(3, 3\) vs model \(32, 16\)\)"):
        CLIPScoreVerifier.from_open_clip(TINY_CLIP, str(tmp_path / "reshaped.pt"))
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "reshaped.pt").read_bytes()[:300])
    with pytest.raises(ValueError, match="could not read .*truncated.pt"):
        CLIPScoreVerifier.from_open_clip(TINY_CLIP, str(tmp_path / "truncated.pt"))
    torch.save(tiny_clip.state_dict(), tmp_path / "good.pt")  # and the right file still loads
    v = CLIPScoreVerifier.from_open_clip(TINY_CLIP, str(tmp_path / "good.pt"))
    assert torch.equal(v.model.visual.proj, tiny_clip.visual.proj)


def test_toyworld_verifier_file_with_wrong_keys_names_them(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from noisesearch.toyworld.assets import VERIFIER_WEIGHTS_DIR as WEIGHTS_DIR
    from noisesearch.toyworld.networks import load_verifier_file

    shipped = WEIGHTS_DIR / "toyclip.safetensors"
    if not shipped.is_file():
        pytest.skip("embedded toyclip weights not built")
    with safe_open(str(shipped), "pt") as f:
        meta = f.metadata()
    sd = load_file(str(shipped))
    first = sorted(sd)[0]
    sd[first + ".renamed"] = sd.pop(first)
    save_file(sd, str(tmp_path / "renamed.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match=rf"1 missing \({first}\); 1 unexpected \({first}\.renamed\)"):
        load_verifier_file(tmp_path / "renamed.safetensors", "toyclip")


def test_pipeline_folder_with_missing_weights_is_a_one_line_error(evil_pipeline, tmp_path):
    from noisesearch.models import load_model

    folder = tmp_path / "pipe"
    shutil.copytree(evil_pipeline[0], folder)
    (folder / "unet" / "diffusion_pytorch_model.bin").unlink()
    with pytest.raises(ValueError, match="could not load the diffusers pipeline") as err:
        load_model(str(folder), device="cpu")
    assert "\n" not in str(err.value)
