"""``preprocess="official"`` equals each verifier's reference transform bit for bit on 8-bit images,
built as the reference code composes it (PIL image in, torchvision / transformers transforms); the
default float path keeps the reference geometry and stays close; the option is validated before
anything loads."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TV1
from PIL import Image
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

from noisesearch.verifiers.base import check_verifier_options
from noisesearch.verifiers.clip import CLIPScoreVerifier
from noisesearch.verifiers.hps import HPSVerifier
from noisesearch.verifiers.imagereward import ImageRewardVerifier
from noisesearch.verifiers.pickscore import PickScoreVerifier
from noisesearch.verifiers.transforms import CLIP_MEAN, CLIP_STD, shortest_side_size

SIZE = 32
#: square, landscape and portrait; (24, 32) sizes the long side to int(42.67) = 42 (round gives 43);
#: (32, 35) leaves an odd excess of 3, which torchvision's CenterCrop and transformers' crop split differently
SHAPES = [(32, 32), (48, 40), (24, 32), (32, 35), (70, 50), (33, 97)]


def _uint8_images(shape: tuple[int, int], n: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, *shape), generator=g, dtype=torch.uint8)


def _pil(img: torch.Tensor) -> Image.Image:
    return Image.fromarray(img.permute(1, 2, 0).numpy())


def _openai_clip_transform(n_px: int) -> Compose:
    """openai CLIP's ``_transform`` (also open_clip's eval transform, BLIP/ImageReward's and the
    aesthetic predictor's, which uses ``clip.load``'s preprocess)."""
    return Compose(
        [
            Resize(n_px, interpolation=InterpolationMode.BICUBIC),
            CenterCrop(n_px),
            lambda im: im.convert("RGB"),
            ToTensor(),
            Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )


def _clip(mode: str, crop: str = "torchvision") -> CLIPScoreVerifier:
    return CLIPScoreVerifier(
        torch.nn.Linear(1, 1), lambda p: p, SIZE, CLIP_MEAN, CLIP_STD, preprocess_mode=mode, crop=crop
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_clip_official_mode_is_the_reference_transform(shape):
    u8 = _uint8_images(shape)
    ref = torch.stack([_openai_clip_transform(SIZE)(_pil(x)) for x in u8])
    ours = _clip("official").preprocess(u8.float() / 255)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("shape", SHAPES)
def test_imagereward_official_mode_is_blips_transform(shape):
    u8 = _uint8_images(shape, seed=1)
    model = SimpleNamespace(vision_config=SimpleNamespace(image_size=SIZE))
    v = ImageRewardVerifier(model, tokenizer=None, preprocess_mode="official")
    ref = torch.stack([_openai_clip_transform(SIZE)(_pil(x)) for x in u8])
    assert torch.equal(v.preprocess(u8.float() / 255), ref)
    assert not v.differentiable


def _clip_image_processor():
    try:  # transformers 5: the PIL backend is its own class; 4.x: the default (slow) processor is PIL
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:
        from transformers import CLIPImageProcessor as Processor
    return Processor(
        size={"shortest_edge": SIZE},
        crop_size={"height": SIZE, "width": SIZE},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_pickscore_official_mode_is_clip_image_processor(shape):
    u8 = _uint8_images(shape, seed=2)
    ref = _clip_image_processor()(images=[_pil(x) for x in u8], return_tensors="pt")["pixel_values"]
    v = PickScoreVerifier(
        torch.nn.Linear(1, 1), lambda p: p, SIZE, CLIP_MEAN, CLIP_STD, preprocess_mode="official", crop="transformers"
    )
    # transformers rescales and normalises in numpy (float64 scale, then float32): one float32 ulp apart
    torch.testing.assert_close(v.preprocess(u8.float() / 255), ref, atol=1e-6, rtol=0)


class _HPSResizeMaxSize(torch.nn.Module):
    """hpsv2/src/open_clip/transform.py's ``ResizeMaxSize`` as the reference writes it (on ToTensor's output)."""

    def forward(self, img):
        height, width = img.shape[1:]
        scale = SIZE / float(max(height, width))
        if scale != 1.0:
            new_size = tuple(round(dim * scale) for dim in (height, width))
            img = TV1.resize(img, new_size, InterpolationMode.BICUBIC)
            pad_h, pad_w = SIZE - new_size[0], SIZE - new_size[1]
            img = TV1.pad(img, padding=[pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
        return img


@pytest.mark.parametrize("shape", [s for s in SHAPES if max(s) != SIZE])  # the reference leaves those unpadded
@pytest.mark.parametrize("mode", ["official", "float"])
def test_hps_is_the_reference_transform_without_clipping(shape, mode):
    u8 = _uint8_images(shape, seed=3)
    reference = Compose([lambda im: im.convert("RGB"), ToTensor(), _HPSResizeMaxSize(), Normalize(CLIP_MEAN, CLIP_STD)])
    ref = torch.stack([reference(_pil(x)) for x in u8])
    v = HPSVerifier(torch.nn.Linear(1, 1), lambda p: p, SIZE, preprocess_mode=mode)
    ours = v.preprocess(u8.float() / 255)
    # the float path is the reference's own float resize: on 8-bit input both modes are exact
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["official", "float"])
def test_hps_keeps_the_bicubic_overshoot_as_the_reference(mode):
    step = torch.zeros(1, 3, 48, 40)
    step[..., 20:] = 1.0  # a hard edge: bicubic rings past black and white
    v = HPSVerifier(torch.nn.Linear(1, 1), lambda p: p, SIZE, preprocess_mode=mode)
    pixels = v.preprocess(step) * torch.tensor(CLIP_STD).view(1, 3, 1, 1) + torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    assert pixels.min() < -0.01 and pixels.max() > 1.01


@pytest.mark.parametrize("shape", SHAPES)
def test_float_mode_has_the_reference_geometry_and_stays_close(shape):
    """The float resize differs from Pillow's 8-bit one only by rounding, never by a pixel shift."""
    u8 = _uint8_images(shape, seed=4)
    images = u8.float() / 255
    official, floating = _clip("official").preprocess(images), _clip("float").preprocess(images)
    assert floating.shape == official.shape == (3, 3, SIZE, SIZE)
    diff = ((floating - official) * torch.tensor(CLIP_STD).view(1, 3, 1, 1)).abs()  # in [0, 1] pixel units
    if shortest_side_size(*shape, SIZE) == shape:  # no resize: only the crop, identical
        assert diff.max() == 0
    else:  # random pixels are the worst case for resampling differences; a one-pixel shift is far larger
        assert diff.mean() < 0.02, diff.mean()


def test_official_mode_rounds_to_8_bits_as_images_are_saved():
    x = torch.full((1, 3, SIZE, SIZE), 100.4 / 255)
    assert torch.equal(_clip("official").preprocess(x), _clip("official").preprocess(torch.full_like(x, 100 / 255)))
    assert _clip("float").differentiable and not _clip("official").differentiable


@pytest.mark.parametrize("name", ["clipscore", "aesthetic", "hpsv2", "hpsv2.1", "imagereward", "pickscore"])
def test_preprocess_option_is_checked_before_anything_loads(name):
    check_verifier_options(name, {"preprocess": "official"})
    check_verifier_options(name, {"preprocess": "float"})
    with pytest.raises(ValueError, match="unknown preprocess mode 'pil'; choose 'float'"):
        check_verifier_options(name, {"preprocess": "pil"})


def test_clipscore_quick_gelu_option_is_checked():
    check_verifier_options("clipscore", {"quick_gelu": "true"})
    with pytest.raises(ValueError, match="quick_gelu must be true, false or auto"):
        check_verifier_options("clipscore", {"quick_gelu": "maybe"})


def test_non_square_inputs_refuse_the_official_mode():
    with pytest.raises(ValueError, match="square model input"):
        CLIPScoreVerifier(torch.nn.Linear(1, 1), lambda p: p, (32, 48), CLIP_MEAN, CLIP_STD, preprocess_mode="official")


def test_numpy_is_what_pil_gives():  # guards the uint8 round trip the official path relies on
    u8 = _uint8_images((5, 7), n=1)[0]
    assert np.array_equal(np.asarray(_pil(u8)), u8.permute(1, 2, 0).numpy())
