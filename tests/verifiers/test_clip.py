"""CLIPScore verifier: formula, preprocessing and batch invariance against an independent
computation with open_clip's own encoders, offline loading and its error messages.

A tiny random-weight open_clip architecture stands in for real checkpoints (no download)."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F

from noisesearch.testing import tiny_open_clip
from noisesearch.verifiers import available_verifiers, load_verifier
from noisesearch.verifiers.clip import CLIPScoreVerifier

TINY = "nstest-tiny-clip"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
PROMPTS = ["a red circle", "two blue squares", "a red circle", "a green triangle left of a red circle"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, tokenizer, checkpoint path) of a registered tiny open_clip config, random weights."""
    d = tmp_path_factory.mktemp("cfg")
    model = tiny_open_clip(TINY, TINY_CFG, d)
    ckpt = d / "tiny.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    return model, open_clip.get_tokenizer(TINY), ckpt


def _verifier(model, tokenizer, **kw) -> CLIPScoreVerifier:
    return CLIPScoreVerifier(model, tokenizer, 32, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD, **kw)


def _reference(model, tokenizer, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """Independent CLIPScore: torchvision's resize/crop/normalise, encode_image/encode_text, 2.5·max(cos, 0)."""
    from torchvision.transforms import v2

    tf = v2.Compose(
        [
            v2.Resize(32, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(32),
            v2.Lambda(lambda x: x.clamp(0, 1)),
            v2.Normalize(open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD),
        ]
    )
    with torch.no_grad():
        img = model.encode_image(torch.stack([tf(x) for x in images]))
        txt = model.encode_text(tokenizer(prompts))
    cos = F.cosine_similarity(img, txt, dim=-1)
    return 2.5 * torch.clamp(cos, min=0)


# (24, 32): the long side is int(42.67) = 42 as torchvision sizes it (not 43); (32, 35): an odd crop excess
@pytest.mark.parametrize("shape", [(32, 32), (48, 40), (20, 24), (24, 32), (32, 35)])
def test_score_matches_independent_formula(tiny, shape):
    model, tok, _ = tiny
    torch.manual_seed(1)
    images = torch.rand(4, 3, *shape)
    ours = _verifier(model, tok).score(images, PROMPTS)
    ref = _reference(model, tok, images, PROMPTS)
    assert ours.shape == (4,)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_loading_does_not_warn_that_the_model_is_random(tiny, caplog):
    _, _, ckpt = tiny
    with caplog.at_level("WARNING"):
        CLIPScoreVerifier.from_open_clip(TINY, str(ckpt))
    assert "initialized randomly" not in caplog.text


def test_quick_gelu_follows_the_option(tiny):
    _, _, ckpt = tiny
    kinds = lambda v: {type(m).__name__ for m in v.model.modules()} & {"GELU", "QuickGELU"}  # noqa: E731
    assert kinds(CLIPScoreVerifier.from_open_clip(TINY, str(ckpt))) == {"GELU"}
    assert kinds(CLIPScoreVerifier.from_open_clip(TINY, str(ckpt), quick_gelu=True)) == {"QuickGELU"}


def test_negative_cosine_is_clamped_and_w_scales(tiny):
    model, tok, _ = tiny
    images = torch.rand(4, 3, 32, 32)
    v = _verifier(model, tok)
    img, txt = v.encode_images(images), v.encode_texts(PROMPTS)
    cos = (img * txt).sum(-1)
    torch.testing.assert_close(v.score(images, PROMPTS), 2.5 * cos.clamp_min(0))
    torch.testing.assert_close(_verifier(model, tok, w=1.0).score(images, PROMPTS), cos.clamp_min(0))


def test_batch_equals_per_image_and_cache_is_transparent(tiny):
    model, tok, _ = tiny
    torch.manual_seed(2)
    images = torch.rand(4, 3, 40, 40)
    v = _verifier(model, tok)
    batched = v.score(images, PROMPTS)
    single = torch.cat([v.score(images[i : i + 1], [p]) for i, p in enumerate(PROMPTS)])
    uncached = _verifier(model, tok, text_cache=0).score(images, PROMPTS)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched, uncached, atol=1e-6, rtol=0)


def test_gradient_flows_to_images(tiny):
    model, tok, _ = tiny
    images = torch.rand(2, 3, 48, 48, requires_grad=True)
    v = _verifier(model, tok, w=1.0)
    # a shifted formula keeps the gradient alive even where the random model's cosine is < 0
    (v.encode_images(images) * v.encode_texts(PROMPTS[:2])).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_from_open_clip_loads_local_safetensors(tiny):
    model, tok, ckpt = tiny
    loaded = CLIPScoreVerifier.from_open_clip(TINY, pretrained=str(ckpt))
    images = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(loaded.score(images, PROMPTS[:3]), _verifier(model, tok).score(images, PROMPTS[:3]))
    assert not loaded.model.training


def test_missing_local_file_names_file_and_option(tiny):
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors.*pretrained"):
        CLIPScoreVerifier.from_open_clip(TINY, pretrained="/no/such/dir/nope.safetensors")


def test_missing_tag_offline_names_hub_repo_and_option(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        CLIPScoreVerifier.from_open_clip("ViT-B-32", pretrained="openai", cache_dir=tmp_path)
    msg = str(err.value)
    assert "timm/vit_base_patch32_clip_224.openai" in msg and "open_clip_pytorch_model.bin" in msg
    assert "pretrained" in msg


def test_unknown_architecture_is_a_value_error():
    with pytest.raises(ValueError, match="open_clip.list_models"):
        CLIPScoreVerifier.from_open_clip("ViT-Nonexistent-1", pretrained=None)


def test_registered_and_prompt_count_checked(tiny):
    assert "clipscore" in available_verifiers()
    model, tok, _ = tiny
    with pytest.raises(ValueError, match="one prompt per image"):
        _verifier(model, tok).score(torch.rand(2, 3, 32, 32), ["a red circle"])


def test_registry_factory_fails_offline_with_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrained"):
        load_verifier("clipscore", model="ViT-B-32", pretrained="openai", cache_dir=str(tmp_path))
