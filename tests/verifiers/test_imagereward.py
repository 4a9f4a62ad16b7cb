"""ImageReward: a tiny BLIP (ViT + BERT with cross-attention) with random weights, written as
``ImageReward.pt`` under the official key names (listed here from the reference ``vit.py``/``med.py``,
independently of our modules), loaded strictly through our loader, and scored against a functional
re-computation of the reference forward pass (explicit softmax attention, BERT's -10000 padding
mask, the MLP head and the reward normalisation), image by image as ``inference_rank`` does."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from noisesearch.verifiers import available_verifiers, load_verifier
from noisesearch.verifiers.imagereward import (
    REWARD_MEAN,
    REWARD_STD,
    UNUSED_KEYS,
    BlipTextConfig,
    BlipVisionConfig,
    ImageRewardModel,
    load_imagereward,
)

VISION = BlipVisionConfig(image_size=32, patch_size=8, width=48, layers=2, heads=2)
WORDS = ["a", "red", "circle", "two", "blue", "square", "##s", "green", "triangle", "left", "of", "big"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS  # + [DEC], [ENC] added by the loader
TEXT = BlipTextConfig(
    vocab_size=len(VOCAB) + 2,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=40,
)
PROMPTS = ["a red circle", "two blue squares", "a red circle", "a big green triangle left of a red circle"]
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def official_shapes(v: BlipVisionConfig, t: BlipTextConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of the reference ``ImageReward`` module's state dict, by name and shape."""
    n = (v.image_size // v.patch_size) ** 2
    s = {
        "blip.visual_encoder.cls_token": (1, 1, v.width),
        "blip.visual_encoder.pos_embed": (1, n + 1, v.width),
        "blip.visual_encoder.patch_embed.proj.weight": (v.width, 3, v.patch_size, v.patch_size),
        "blip.visual_encoder.patch_embed.proj.bias": (v.width,),
        "blip.visual_encoder.norm.weight": (v.width,),
        "blip.visual_encoder.norm.bias": (v.width,),
    }
    for i in range(v.layers):
        b = f"blip.visual_encoder.blocks.{i}."
        s |= {
            b + "norm1.weight": (v.width,),
            b + "norm1.bias": (v.width,),
            b + "attn.qkv.weight": (3 * v.width, v.width),
            b + "attn.qkv.bias": (3 * v.width,),
            b + "attn.proj.weight": (v.width, v.width),
            b + "attn.proj.bias": (v.width,),
            b + "norm2.weight": (v.width,),
            b + "norm2.bias": (v.width,),
            b + "mlp.fc1.weight": (4 * v.width, v.width),
            b + "mlp.fc1.bias": (4 * v.width,),
            b + "mlp.fc2.weight": (v.width, 4 * v.width),
            b + "mlp.fc2.bias": (v.width,),
        }
    h, e = t.hidden_size, "blip.text_encoder.embeddings."
    s |= {
        e + "word_embeddings.weight": (t.vocab_size, h),
        e + "position_embeddings.weight": (t.max_position_embeddings, h),
        e + "LayerNorm.weight": (h,),
        e + "LayerNorm.bias": (h,),
    }
    for i in range(t.num_hidden_layers):
        b = f"blip.text_encoder.encoder.layer.{i}."
        for att, kv in (("attention", h), ("crossattention", v.width)):
            s |= {
                f"{b}{att}.self.query.weight": (h, h),
                f"{b}{att}.self.query.bias": (h,),
                f"{b}{att}.self.key.weight": (h, kv),
                f"{b}{att}.self.key.bias": (h,),
                f"{b}{att}.self.value.weight": (h, kv),
                f"{b}{att}.self.value.bias": (h,),
                f"{b}{att}.output.dense.weight": (h, h),
                f"{b}{att}.output.dense.bias": (h,),
                f"{b}{att}.output.LayerNorm.weight": (h,),
                f"{b}{att}.output.LayerNorm.bias": (h,),
            }
        s |= {
            b + "intermediate.dense.weight": (t.intermediate_size, h),
            b + "intermediate.dense.bias": (t.intermediate_size,),
            b + "output.dense.weight": (h, t.intermediate_size),
            b + "output.dense.bias": (h,),
            b + "output.LayerNorm.weight": (h,),
            b + "output.LayerNorm.bias": (h,),
        }
    # BLIP_Pretrain's contrastive projections: saved in the file, unused by the reward
    s |= {
        "blip.vision_proj.weight": (256, v.width),
        "blip.vision_proj.bias": (256,),
        "blip.text_proj.weight": (256, h),
        "blip.text_proj.bias": (256,),
    }
    dims = [h, 1024, 128, 64, 16, 1]
    for idx, (i, o) in zip((0, 2, 4, 6, 7), zip(dims[:-1], dims[1:])):
        s |= {f"mlp.layers.{idx}.weight": (o, i), f"mlp.layers.{idx}.bias": (o,)}
    return s


def random_official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in official_shapes(VISION, TEXT).items():
        x = torch.randn(shape, generator=g)
        if "norm" in k.lower() and k.endswith("weight"):
            sd[k] = 1.0 + 0.1 * x
        elif k.startswith("mlp."):
            sd[k] = x / math.sqrt(shape[-1]) if k.endswith("weight") else 0.1 * x
        else:
            sd[k] = 0.2 * x / math.sqrt(shape[-1]) if len(shape) >= 2 and "embed" not in k else 0.5 * x
    # the position-index buffer old transformers versions saved
    sd["blip.text_encoder.embeddings.position_ids"] = torch.arange(TEXT.max_position_embeddings)[None]
    return sd


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch, tmp_path):
    for var in (
        "NOISESEARCH_IMAGEREWARD_PATH",
        "NOISESEARCH_IMAGEREWARD_MED_CONFIG",
        "NOISESEARCH_BERT_TOKENIZER_PATH",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(state dict, checkpoint folder with ImageReward.pt and med_config.json, tokenizer folder)."""
    d = tmp_path_factory.mktemp("imagereward")
    (d / "tok").mkdir()
    (d / "tok" / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (d / "ckpt").mkdir()
    sd = random_official_state_dict()
    torch.save(sd, d / "ckpt" / "ImageReward.pt")
    med = {
        "architectures": ["BertModel"],
        "hidden_act": "gelu",
        "hidden_size": TEXT.hidden_size,
        "intermediate_size": TEXT.intermediate_size,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 40,
        "model_type": "bert",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "pad_token_id": 0,
        "type_vocab_size": 2,
        "vocab_size": TEXT.vocab_size,
        "encoder_width": 768,
        "add_cross_attention": True,
    }
    (d / "ckpt" / "med_config.json").write_text(json.dumps(med))
    return sd, d / "ckpt", d / "tok"


def _ln(x, sd, k, eps):
    return F.layer_norm(x, x.shape[-1:], sd[k + ".weight"], sd[k + ".bias"], eps)


def _lin(x, sd, k):
    return x @ sd[k + ".weight"].T + sd[k + ".bias"]


def _attend(q, k, v, heads, mask=None):
    b, n, w = q.shape
    sp = lambda t: t.reshape(b, t.shape[1], heads, w // heads).permute(0, 2, 1, 3)  # noqa: E731
    scores = sp(q) @ sp(k).transpose(-1, -2) / math.sqrt(w // heads)
    if mask is not None:
        scores = scores + mask
    return (scores.softmax(-1) @ sp(v)).permute(0, 2, 1, 3).reshape(b, n, w)


def reference_reward(sd, pixels, ids, att) -> torch.Tensor:
    """The reference forward, written out from vit.py / med.py / ImageReward.py."""
    p = "blip.visual_encoder."
    x = F.conv2d(pixels, sd[p + "patch_embed.proj.weight"], sd[p + "patch_embed.proj.bias"], stride=VISION.patch_size)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd[p + "cls_token"].expand(x.shape[0], -1, -1), x], 1) + sd[p + "pos_embed"]
    for i in range(VISION.layers):
        b = f"{p}blocks.{i}."
        y = _ln(x, sd, b + "norm1", 1e-6)
        q, k, v = _lin(y, sd, b + "attn.qkv").chunk(3, dim=-1)
        x = x + _lin(_attend(q, k, v, VISION.heads), sd, b + "attn.proj")
        y = _ln(x, sd, b + "norm2", 1e-6)
        x = x + _lin(F.gelu(_lin(y, sd, b + "mlp.fc1")), sd, b + "mlp.fc2")
    img = _ln(x, sd, p + "norm", 1e-6)
    e = "blip.text_encoder.embeddings."
    t = sd[e + "word_embeddings.weight"][ids] + sd[e + "position_embeddings.weight"][: ids.shape[1]]
    t = _ln(t, sd, e + "LayerNorm", 1e-12)
    mask = (1.0 - att[:, None, None, :].float()) * -10000.0
    for i in range(TEXT.num_hidden_layers):
        b = f"blip.text_encoder.encoder.layer.{i}."
        for att_name, kv, m in (("attention", None, mask), ("crossattention", img, None)):
            src = t if kv is None else kv
            a = _attend(
                _lin(t, sd, f"{b}{att_name}.self.query"),
                _lin(src, sd, f"{b}{att_name}.self.key"),
                _lin(src, sd, f"{b}{att_name}.self.value"),
                TEXT.num_attention_heads,
                m,
            )
            t = _ln(_lin(a, sd, f"{b}{att_name}.output.dense") + t, sd, f"{b}{att_name}.output.LayerNorm", 1e-12)
        ff = _lin(F.gelu(_lin(t, sd, b + "intermediate.dense")), sd, b + "output.dense")
        t = _ln(ff + t, sd, b + "output.LayerNorm", 1e-12)
    r = t[:, 0]
    for idx in (0, 2, 4, 6, 7):
        r = _lin(r, sd, f"mlp.layers.{idx}")
    return ((r - REWARD_MEAN) / REWARD_STD).squeeze(-1)


def reference_scores(sd, tok_dir, images, prompts) -> torch.Tensor:
    """Image by image: Resize(bicubic) + CenterCrop + Normalize; BertTokenizer to 35 tokens."""
    from transformers import BertTokenizer

    tok = BertTokenizer.from_pretrained(str(tok_dir))
    out = []
    with torch.no_grad():
        for img, prompt in zip(images, prompts):
            x = TF.resize(img, VISION.image_size, InterpolationMode.BICUBIC, antialias=True).clamp(0, 1)
            x = TF.normalize(TF.center_crop(x, VISION.image_size), MEAN, STD)[None]
            t = tok(prompt, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
            out.append(reference_reward(sd, x, t.input_ids, t.attention_mask))
    return torch.cat(out)


@pytest.mark.parametrize("shape", [(32, 32), (64, 64), (40, 56)])
def test_score_matches_reference_forward(files, shape):
    sd, ckpt, tok = files
    v = load_imagereward(ckpt / "ImageReward.pt", tokenizer=tok, vision=VISION)
    torch.manual_seed(1)
    images = torch.rand(4, 3, *shape)
    ours = v.score(images, PROMPTS)
    assert ours.shape == (4,) and v.differentiable
    torch.testing.assert_close(ours, reference_scores(sd, tok, images, PROMPTS), atol=1e-4, rtol=1e-4)
    assert ours.std() > 1e-3  # the random model does discriminate


def test_text_config_is_read_from_med_config_and_prompts_use_35_tokens(files):
    _, ckpt, tok = files
    v = load_imagereward(ckpt, tokenizer=tok, vision=VISION)  # med_config.json next to the checkpoint
    assert v.model.text_config == TEXT
    ids, mask = v.tokenize(PROMPTS + [" ".join(["red"] * 60)])
    assert ids.shape == (5, 35) and mask[-1].all() and not mask[0].all()


def test_batch_equals_per_image_and_gradient_flows(files):
    _, ckpt, tok = files
    v = load_imagereward(ckpt, tokenizer=tok, vision=VISION)
    images = torch.rand(4, 3, 48, 48, requires_grad=True)
    batched = v.score(images, PROMPTS)
    single = torch.cat([v.score(images[i : i + 1], [p]) for i, p in enumerate(PROMPTS)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    batched.sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_registered_and_loaded_through_the_registry(files, monkeypatch):
    sd, ckpt, tok = files
    assert "imagereward" in available_verifiers()
    import noisesearch.verifiers.imagereward as ir

    monkeypatch.setattr(ir, "BlipVisionConfig", lambda: VISION)  # the registry builds the default ViT-L
    v = load_verifier("imagereward", path=str(ckpt), tokenizer=str(tok))
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(
        v.score(images, PROMPTS[:2]), reference_scores(sd, tok, images, PROMPTS[:2]), atol=1e-4, rtol=1e-4
    )


def test_strict_loading_names_missing_and_unexpected_keys(files, tmp_path):
    sd, _, tok = files
    bad = dict(sd)
    bad["mlp.layers.1.weight"] = bad.pop("mlp.layers.0.weight")  # an off-by-one head layout
    torch.save(bad, tmp_path / "ImageReward.pt")
    with pytest.raises(ValueError, match=r"missing \(mlp\.layers\.0\.weight\).*unexpected \(mlp\.layers\.1\.weight\)"):
        load_imagereward(tmp_path, tokenizer=tok, vision=VISION, text=TEXT)
    bad = dict(sd)
    bad["blip.visual_encoder.pos_embed"] = torch.zeros(1, 5, VISION.width)
    torch.save(bad, tmp_path / "ImageReward.pt")
    with pytest.raises(ValueError, match=r"mis-shaped \(blip\.visual_encoder\.pos_embed"):
        load_imagereward(tmp_path, tokenizer=tok, vision=VISION, text=TEXT)


def test_missing_files_name_file_hub_option_and_env(files, tmp_path):
    _, ckpt, tok = files
    with pytest.raises(FileNotFoundError) as err:
        load_verifier("imagereward", cache_dir=str(tmp_path), tokenizer=str(tok))
    msg = str(err.value)
    for needle in ("ImageReward.pt", "THUDM/ImageReward", "path=", "NOISESEARCH_IMAGEREWARD_PATH"):
        assert needle in msg
    with pytest.raises(FileNotFoundError) as err:
        load_imagereward(ckpt, cache_dir=tmp_path, vision=VISION)
    msg = str(err.value)
    for needle in ("bert-base-uncased", "tokenizer=", "NOISESEARCH_BERT_TOKENIZER_PATH"):
        assert needle in msg


#: ImageReward.pt's key list, dumped from the official module definitions (see the file's "_about")
OFFICIAL_KEYS = json.loads((Path(__file__).parent / "official_keys_imagereward.json").read_text())["state_dict"]


def test_the_test_layout_is_the_official_key_list():
    """The layout the tests write (``official_shapes``, at full size) is the official module's, so the
    strict-loading tests above load what the official files hold."""
    ours = {k: list(v) for k, v in official_shapes(BlipVisionConfig(), BlipTextConfig()).items()}
    ours["blip.text_encoder.embeddings.position_ids"] = [1, 512]
    assert ours == {k: shape for k, (shape, _) in OFFICIAL_KEYS.items()}


@pytest.mark.slow
def test_the_full_size_model_loads_exactly_the_official_keys():
    with torch.device("meta"):  # 447M values: shapes only
        model = ImageRewardModel()
    ours = {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in model.state_dict().items()}
    unused = {k for k in OFFICIAL_KEYS if any(k == u or (u.endswith(".") and k.startswith(u)) for u in UNUSED_KEYS)}
    assert unused == {
        "blip.text_encoder.embeddings.position_ids",
        "blip.vision_proj.weight",
        "blip.vision_proj.bias",
        "blip.text_proj.weight",
        "blip.text_proj.bias",
    }
    assert ours == {k: v for k, v in OFFICIAL_KEYS.items() if k not in unused}
