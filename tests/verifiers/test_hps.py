"""HPSv2 / v2.1: a tiny open_clip CLIP with random weights, saved as ``{"state_dict": ...}`` under
the official file name, loaded through our loader and scored against an independent computation
of the reference pipeline (ResizeMaxSize + CLIP normalisation, ``model(image, text)``, diagonal of
image @ text features)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import open_clip
import pytest
import torch
import torchvision.transforms.functional as TV1
from torchvision.transforms import Compose, InterpolationMode, Normalize, ToTensor

from noisesearch.testing import tiny_open_clip
from noisesearch.verifiers import available_verifiers, load_verifier
from noisesearch.verifiers.hps import HPSVerifier, build_architecture, load_hps

TINY = "nstest-hps-tiny"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
PROMPTS = ["a red circle", "two blue squares", "a red circle", "a green triangle left of a red circle"]
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch, tmp_path):
    """No user checkpoint locations leak into the tests."""
    for var in ("NOISESEARCH_HPSV2_PATH", "NOISESEARCH_HPSV21_PATH", "HPS_ROOT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, folder holding both official checkpoint files) for a tiny registered config."""
    d = tmp_path_factory.mktemp("hps")
    model = tiny_open_clip(TINY, TINY_CFG, d)
    ckpts = d / "ckpts"
    ckpts.mkdir()
    # the official layout: torch.save of a dict whose "state_dict" loads into the open_clip model
    torch.save({"state_dict": model.state_dict()}, ckpts / "HPS_v2_compressed.pt")
    torch.save({"state_dict": model.state_dict()}, ckpts / "HPS_v2.1_compressed.pt")
    return model, ckpts


@functools.lru_cache(maxsize=1)
def _tokenizer():
    return open_clip.get_tokenizer(TINY)


class OfficialResizeMaxSize(torch.nn.Module):
    """hpsv2/src/open_clip/transform.py's ``ResizeMaxSize`` as the reference writes it; in the reference's
    eval transform it comes after ``ToTensor``, so it resizes a float tensor and nothing clips it."""

    def __init__(self, max_size: int, fill: float = 0):
        super().__init__()
        self.max_size, self.interpolation, self.fill = max_size, InterpolationMode.BICUBIC, fill

    def forward(self, img):
        height, width = img.shape[1:]
        scale = self.max_size / float(max(height, width))
        if scale != 1.0:
            new_size = tuple(round(dim * scale) for dim in (height, width))
            img = TV1.resize(img, new_size, self.interpolation)
            pad_h = self.max_size - new_size[0]
            pad_w = self.max_size - new_size[1]
            img = TV1.pad(img, padding=[pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=self.fill)
        return img


def official_transform(size: int) -> Compose:
    """The reference eval transform (``image_transform(..., resize_longest_max=True)``), from a PIL image."""
    return Compose([ToTensor(), OfficialResizeMaxSize(size), Normalize(MEAN, STD)])


def _reference(model, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """hpsv2.score, image by image: the reference transform on the float image (``ToTensor``'s output),
    ``model(image, text)``, diagonal of image @ text features."""
    size = TINY_CFG["vision_cfg"]["image_size"]
    transform = Compose(official_transform(size).transforms[1:])  # the images are ToTensor's output already
    tok = _tokenizer()
    out = []
    with torch.no_grad():
        for img, prompt in zip(images, prompts):
            x = transform(img).unsqueeze(0)
            feats = model(x, tok([prompt]))
            image_features, text_features = (
                (feats["image_features"], feats["text_features"]) if isinstance(feats, dict) else feats[:2]
            )
            out.append(torch.diagonal(image_features @ text_features.T))
    return torch.cat(out)


@pytest.mark.parametrize("shape", [(32, 32), (64, 64), (48, 40), (20, 28)])
def test_score_matches_reference_pipeline(tiny, shape):
    model, ckpts = tiny
    v = load_hps("v2.0", ckpts / "HPS_v2_compressed.pt", model=TINY)
    torch.manual_seed(1)
    images = torch.rand(4, 3, *shape)
    ours = v.score(images, PROMPTS)
    assert ours.shape == (4,) and isinstance(v, HPSVerifier) and v.differentiable
    torch.testing.assert_close(ours, _reference(model, images, PROMPTS), atol=2e-5, rtol=1e-5)


def test_no_logit_scale_and_value_is_a_cosine(tiny):
    model, ckpts = tiny
    v = load_hps("v2.1", ckpts, model=TINY)  # a folder holding the file works too
    images = torch.rand(4, 3, 32, 32)
    s = v.score(images, PROMPTS)
    img = torch.nn.functional.normalize(model.encode_image(v.preprocess(images)), dim=-1)
    txt = torch.nn.functional.normalize(model.encode_text(_tokenizer()(PROMPTS)), dim=-1)
    torch.testing.assert_close(s, (img * txt).sum(-1), atol=1e-5, rtol=0)
    assert s.abs().max() <= 1.0 and v.name == "hpsv2.1"


def test_batch_equals_per_image_and_gradient_flows(tiny):
    _, ckpts = tiny
    v = load_hps("v2.0", ckpts, model=TINY)
    images = torch.rand(4, 3, 40, 56, requires_grad=True)
    batched = v.score(images, PROMPTS)
    single = torch.cat([v.score(images[i : i + 1], [p]) for i, p in enumerate(PROMPTS)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    batched.sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_registered_and_loaded_through_the_registry(tiny):
    model, ckpts = tiny
    assert {"hpsv2", "hpsv2.1"} <= set(available_verifiers())
    v = load_verifier("hpsv2.1", path=str(ckpts), model=TINY)
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(v.score(images, PROMPTS[:2]), _reference(model, images, PROMPTS[:2]), atol=2e-5, rtol=0)


def test_found_in_the_hugging_face_cache(tiny, tmp_path):
    _, ckpts = tiny
    snap = tmp_path / "hub" / "models--xswu--HPSv2" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "HPS_v2_compressed.pt").write_bytes((ckpts / "HPS_v2_compressed.pt").read_bytes())
    (tmp_path / "hub" / "models--xswu--HPSv2" / "refs").mkdir()
    (tmp_path / "hub" / "models--xswu--HPSv2" / "refs" / "main").write_text("abc123")
    v = load_hps("v2.0", model=TINY, cache_dir=tmp_path / "hub")
    assert v.score(torch.rand(1, 3, 32, 32), ["x"]).shape == (1,)


def test_found_through_the_environment_variable(tiny, monkeypatch):
    _, ckpts = tiny
    monkeypatch.setenv("NOISESEARCH_HPSV21_PATH", str(ckpts))
    assert load_hps("v2.1", model=TINY).score(torch.rand(1, 3, 32, 32), ["x"]).shape == (1,)


def test_missing_checkpoint_names_file_hub_option_and_env(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_verifier("hpsv2", model=TINY, cache_dir=str(tmp_path))
    msg = str(err.value)
    for needle in ("HPS_v2_compressed.pt", "xswu/HPSv2", "path=", "NOISESEARCH_HPSV2_PATH", "hf download"):
        assert needle in msg


def test_wrong_checkpoints_are_rejected_with_the_key_names(tiny, tmp_path):
    model, _ = tiny
    sd = dict(model.state_dict())
    sd["visual.extra.weight"] = sd.pop("visual.proj")
    torch.save({"state_dict": sd}, tmp_path / "HPS_v2_compressed.pt")
    with pytest.raises(ValueError, match=r"missing \(visual\.proj\).*unexpected \(visual\.extra\.weight\)"):
        load_hps("v2.0", tmp_path, model=TINY)
    torch.save(model.state_dict(), tmp_path / "HPS_v2_compressed.pt")
    with pytest.raises(ValueError, match="'state_dict' entry"):
        load_hps("v2.0", tmp_path, model=TINY)
    with pytest.raises(ValueError, match="unknown HPS version"):
        load_hps("v3", tmp_path, model=TINY)


def test_the_loader_builds_exactly_the_official_checkpoint_keys():
    """The key list of the official checkpoints, dumped from HPSv2's own open_clip fork (see the data
    file's "_about"), equals what the loader builds: names, shapes and dtypes, nothing more or less."""
    official = json.loads((Path(__file__).parent / "official_keys_hpsv2.json").read_text())["state_dict"]
    model = build_architecture("ViT-H-14", device="meta")  # shapes without allocating its 986M values
    ours = {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in model.state_dict().items()}
    assert ours == official
