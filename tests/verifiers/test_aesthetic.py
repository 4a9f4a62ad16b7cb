"""LAION aesthetic predictor v2: a tiny open_clip CLIP plus a random head written as
``sac+logos+ava1-l14-linearMSE.pth`` (keys ``layers.{0,2,4,6,7}``), loaded through our loader and
compared with the reference ``simple_inference.py`` computation (clip preprocess, encode_image,
L2 normalisation, the linear layers), image by image."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from safetensors.torch import save_file
from torchvision.transforms import InterpolationMode

from noisesearch.testing import tiny_open_clip
from noisesearch.verifiers import available_verifiers, load_verifier
from noisesearch.verifiers.aesthetic import load_aesthetic

TINY = "nstest-aesthetic-tiny"
TINY_CFG = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
HEAD = "sac+logos+ava1-l14-linearMSE.pth"


def official_head(input_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The predictor's state dict: Linear layers at Sequential indices 0, 2, 4, 6, 7."""
    g = torch.Generator().manual_seed(seed)
    dims = [input_size, 1024, 128, 64, 16, 1]
    sd = {}
    for idx, (i, o) in zip((0, 2, 4, 6, 7), zip(dims[:-1], dims[1:])):
        sd[f"layers.{idx}.weight"] = torch.randn(o, i, generator=g) / i**0.5
        sd[f"layers.{idx}.bias"] = 0.1 * torch.randn(o, generator=g)
    return sd


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch, tmp_path):
    monkeypatch.delenv("NOISESEARCH_AESTHETIC_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(clip model, its checkpoint file, head state dict, folder with the head file)."""
    d = tmp_path_factory.mktemp("aesthetic")
    gelu = tiny_open_clip(TINY, TINY_CFG, d)
    save_file({k: v.contiguous() for k, v in gelu.state_dict().items()}, str(d / "clip.safetensors"))
    # the reference: OpenAI's CLIP, i.e. the same weights run with QuickGELU
    model = open_clip.create_model(TINY, pretrained=None, force_quick_gelu=True).eval()
    model.load_state_dict(gelu.state_dict())
    head = official_head(TINY_CFG["embed_dim"])
    (d / "head").mkdir()
    torch.save(head, d / "head" / HEAD)
    return model, d / "clip.safetensors", head, d / "head"


def reference(model, head, images: torch.Tensor) -> torch.Tensor:
    """simple_inference.py, one image at a time."""
    out = []
    with torch.no_grad():
        for img in images:
            x = TF.resize(img, 32, InterpolationMode.BICUBIC, antialias=True).clamp(0, 1)
            x = TF.normalize(TF.center_crop(x, 32), MEAN, STD)[None]
            emb = model.encode_image(x)
            emb = emb / emb.norm(dim=-1, keepdim=True)  # `normalized` (L2)
            for idx in (0, 2, 4, 6, 7):
                emb = emb @ head[f"layers.{idx}.weight"].T + head[f"layers.{idx}.bias"]
            out.append(emb[:, 0])
    return torch.cat(out)


@pytest.mark.parametrize("shape", [(32, 32), (64, 64), (48, 40), (24, 32)])
def test_score_matches_reference(files, shape):
    model, clip_ckpt, head, head_dir = files
    v = load_aesthetic(head_dir / HEAD, clip_model=TINY, clip_pretrained=str(clip_ckpt))
    torch.manual_seed(1)
    images = torch.rand(4, 3, *shape)
    ours = v.score(images, ["ignored"] * 4)
    assert ours.shape == (4,) and v.differentiable
    torch.testing.assert_close(ours, reference(model, head, images), atol=1e-5, rtol=1e-5)


def _activations(model) -> set[str]:
    return {type(m).__name__ for m in model.modules() if type(m).__name__ in ("GELU", "QuickGELU")}


def test_a_clip_file_runs_with_quick_gelu_as_openai_clip(files):
    _, clip_ckpt, _, head_dir = files
    v = load_aesthetic(head_dir, clip_model=TINY, clip_pretrained=str(clip_ckpt))
    assert _activations(v.clip.model) == {"QuickGELU"}


def test_batch_equals_per_image_and_gradient_flows(files):
    _, clip_ckpt, _, head_dir = files
    v = load_aesthetic(head_dir, clip_model=TINY, clip_pretrained=str(clip_ckpt))  # folder form
    images = torch.rand(3, 3, 40, 40, requires_grad=True)
    batched = v.score(images, ["a", "b", "c"])
    single = torch.cat([v.score(images[i : i + 1], ["a"]) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    batched.sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="one prompt per image"):
        v.score(images.detach(), ["a"])


def test_trl_copy_is_found_in_the_hugging_face_cache(files, tmp_path):
    model, clip_ckpt, head, head_dir = files
    repo = tmp_path / "hub" / "models--trl-lib--ddpo-aesthetic-predictor"
    (repo / "snapshots" / "r1").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("r1")
    (repo / "snapshots" / "r1" / "aesthetic-model.pth").write_bytes((head_dir / HEAD).read_bytes())
    v = load_verifier("aesthetic", clip_model=TINY, clip_pretrained=str(clip_ckpt), cache_dir=str(tmp_path / "hub"))
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(v.score(images, ["", ""]), reference(model, head, images), atol=1e-5, rtol=1e-5)
    assert "aesthetic" in available_verifiers()


def test_missing_head_names_both_sources_option_and_env(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_aesthetic(clip_model=TINY, clip_pretrained=None, cache_dir=tmp_path)
    msg = str(err.value)
    for needle in (
        HEAD,
        "improved-aesthetic-predictor",
        "trl-lib/ddpo-aesthetic-predictor",
        "path=",
        "NOISESEARCH_AESTHETIC_PATH",
    ):
        assert needle in msg


def test_wrong_heads_are_rejected(files, tmp_path):
    _, clip_ckpt, head, _ = files
    torch.save(official_head(768), tmp_path / HEAD)  # the real ViT-L/14 head on a 24-d tiny CLIP
    with pytest.raises(ValueError, match="768-d embeddings"):
        load_aesthetic(tmp_path / HEAD, clip_model=TINY, clip_pretrained=str(clip_ckpt))
    bad = {k.replace("layers.7", "layers.8"): v for k, v in head.items()}
    torch.save(bad, tmp_path / HEAD)
    with pytest.raises(ValueError, match=r"missing \(layers\.7\.weight, layers\.7\.bias\)"):
        load_aesthetic(tmp_path / HEAD, clip_model=TINY, clip_pretrained=str(clip_ckpt))


def test_the_official_head_layout_loads_strictly(tmp_path):
    """A head with exactly the key list of the official MLP (dumped from simple_inference.py's class,
    see the data file's "_about"), at its full 768-wide size, loads; the tests' layout is that list."""
    official = json.loads((Path(__file__).parent / "official_keys_aesthetic.json").read_text())["state_dict"]
    assert {k: list(v.shape) for k, v in official_head(768).items()} == {k: s for k, (s, _) in official.items()}
    g = torch.Generator().manual_seed(0)
    torch.save({k: torch.randn(shape, generator=g) for k, (shape, _) in official.items()}, tmp_path / HEAD)
    from noisesearch.io.checkpoints import load_strict, load_weights
    from noisesearch.verifiers.aesthetic import PreferenceMLP

    load_strict(PreferenceMLP(768), load_weights(tmp_path / HEAD), tmp_path / HEAD)
