"""PickScore: a tiny transformers ``CLIPModel`` with random weights saved with ``save_pretrained``
(the PickScore_v1 layout) and a tiny CLIP BPE tokenizer + image-processor config (the laion
processor layout), loaded through our loader and compared with the reference inference code
(``get_image_features``/``get_text_features`` with padding to the longest prompt,
``logit_scale.exp() * cosine``), image by image."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from open_clip.tokenizer import bytes_to_unicode
from torchvision.transforms import InterpolationMode

from noisesearch.verifiers import available_verifiers, load_verifier
from noisesearch.verifiers.pickscore import load_pickscore

PROMPTS = ["a red circle", "two blue squares!", "a red circle", "a green triangle left of a red circle"]
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
MERGES = ["r e", "re d</w>", "c i", "ci r", "cir c", "circ l", "circl e</w>", "a</w> r"]


def tiny_tokenizer_files(folder) -> tuple[int, int]:
    """Writes vocab.json/merges.txt of a byte-level CLIP BPE; returns (bos id, eos id)."""
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab |= {c + "</w>": len(chars) + i for i, c in enumerate(chars)}
    for m in MERGES:
        vocab[m.replace(" ", "")] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    return vocab["<|startoftext|>"], vocab["<|endoftext|>"]


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch):
    monkeypatch.delenv("NOISESEARCH_PICKSCORE_PATH", raising=False)
    monkeypatch.delenv("NOISESEARCH_PICKSCORE_PROCESSOR_PATH", raising=False)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(model, model folder, processor folder)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    d = tmp_path_factory.mktemp("pickscore")
    raw, proc, mdir = d / "raw", d / "processor", d / "model"
    raw.mkdir()
    bos, eos = tiny_tokenizer_files(raw)
    CLIPTokenizer(str(raw / "vocab.json"), str(raw / "merges.txt")).save_pretrained(str(proc))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(proc))
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=eos + 1,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
        ),
        vision_config=dict(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
        ),
        projection_dim=16,
        logit_scale_init_value=2.0,
    )
    torch.manual_seed(0)
    model = CLIPModel(cfg).eval()
    model.save_pretrained(str(mdir))
    return model, mdir, proc


def _features(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 4.x vs 5.x


def reference(model, proc, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """The PickScore README's calc_probs, one image/prompt pair at a time."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(proc))
    out = []
    with torch.no_grad():
        for img, prompt in zip(images, prompts):
            x = TF.resize(img, 32, InterpolationMode.BICUBIC, antialias=True).clamp(0, 1)
            top, left = (x.shape[-2] - 32) // 2, (x.shape[-1] - 32) // 2  # transformers' center_crop floors
            x = TF.normalize(x[..., top : top + 32, left : left + 32], MEAN, STD)[None]
            image_embs = _features(model.get_image_features(pixel_values=x))
            image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
            t = tok(prompt, padding=True, truncation=True, max_length=77, return_tensors="pt")
            text_embs = _features(model.get_text_features(**t))
            text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
            out.append(model.logit_scale.exp() * (text_embs @ image_embs.T)[0])
    return torch.cat(out)


@pytest.mark.parametrize("shape", [(32, 32), (64, 64), (48, 40), (24, 32), (32, 35)])
def test_score_matches_reference(folders, shape):
    model, mdir, proc = folders
    v = load_pickscore(mdir, processor=proc)
    torch.manual_seed(1)
    images = torch.rand(4, 3, *shape)
    ours = v.score(images, PROMPTS)
    assert ours.shape == (4,) and v.differentiable
    torch.testing.assert_close(ours, reference(model, proc, images, PROMPTS), atol=1e-4, rtol=1e-5)
    assert abs(float(model.logit_scale.detach().exp()) - 7.389) < 1e-2  # exp(2): the scale is applied


def test_batch_equals_per_image_and_gradient_flows(folders):
    _, mdir, proc = folders
    v = load_verifier("pickscore", path=str(mdir), processor=str(proc))
    assert "pickscore" in available_verifiers()
    images = torch.rand(4, 3, 40, 40, requires_grad=True)
    batched = v.score(images, PROMPTS)
    single = torch.cat([v.score(images[i : i + 1], [p]) for i, p in enumerate(PROMPTS)])
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=0)
    batched.sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_found_in_the_hugging_face_cache(folders, tmp_path):
    model, mdir, proc = folders
    hub = tmp_path / "hub"
    for repo, src in (("yuvalkirstain/PickScore_v1", mdir), ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", proc)):
        root = hub / ("models--" + repo.replace("/", "--"))
        (root / "snapshots" / "s1").mkdir(parents=True)
        (root / "refs").mkdir()
        (root / "refs" / "main").write_text("s1")
        for f in src.iterdir():
            (root / "snapshots" / "s1" / f.name).write_bytes(f.read_bytes())
    v = load_pickscore(cache_dir=hub)
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(
        v.score(images, PROMPTS[:2]), reference(model, proc, images, PROMPTS[:2]), atol=1e-4, rtol=1e-5
    )


def test_missing_folders_name_hub_ids_options_and_env(folders, tmp_path):
    _, mdir, _ = folders
    with pytest.raises(FileNotFoundError) as err:
        load_verifier("pickscore", cache_dir=str(tmp_path))
    msg = str(err.value)
    for needle in ("yuvalkirstain/PickScore_v1", "path=", "NOISESEARCH_PICKSCORE_PATH"):
        assert needle in msg
    with pytest.raises(FileNotFoundError) as err:
        load_pickscore(mdir, cache_dir=tmp_path)
    msg = str(err.value)
    for needle in ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "processor=", "NOISESEARCH_PICKSCORE_PROCESSOR_PATH"):
        assert needle in msg
    with pytest.raises(FileNotFoundError, match="lacks config.json, model.safetensors or pytorch_model.bin"):
        load_pickscore(tmp_path, processor=tmp_path)


def test_incomplete_checkpoint_is_rejected(folders, tmp_path):
    from safetensors.torch import load_file, save_file

    _, mdir, proc = folders
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_bytes((mdir / "config.json").read_bytes())
    sd = load_file(str(mdir / "model.safetensors"))
    del sd["visual_projection.weight"]
    save_file(sd, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="visual_projection.weight"):
        load_pickscore(bad, processor=proc)
