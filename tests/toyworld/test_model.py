"""Tests for the toyworld model: tokenizer, component builders, quick training into a stock pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPTokenizer

from noisesearch.toyworld import grammar
from noisesearch.toyworld import model as tw_model
from noisesearch.toyworld.training.data import batch_indices, render_pool
from noisesearch.toyworld.training.pipeline import ToyTrainConfig, train_pipeline

WEIGHTS = Path(tw_model.__file__).parent / "weights" / "pipeline"


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    return tw_model.build_tokenizer(grammar.vocabulary(), max_length=16)


@pytest.fixture(scope="module")
def quick_pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("toy_pipeline")
    return train_pipeline(ToyTrainConfig.quick(), out)


def test_every_vocabulary_word_is_one_token(tokenizer: CLIPTokenizer) -> None:
    for word in grammar.vocabulary():
        ids = tokenizer(word).input_ids
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id, word
        assert len(ids) == 3, f"{word!r} -> {tokenizer.convert_ids_to_tokens(ids)}"
    # distinct words map to distinct tokens
    assert len({tokenizer(w).input_ids[1] for w in grammar.vocabulary()}) == len(grammar.vocabulary())


def test_tokenizer_pads_with_eos_and_round_trips(tokenizer: CLIPTokenizer, tmp_path: Path) -> None:
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    tw_model.save_tokenizer(tokenizer, tmp_path)
    assert (tmp_path / "vocab.json").exists() and (tmp_path / "merges.txt").exists()
    loaded = CLIPTokenizer.from_pretrained(tmp_path, local_files_only=True)
    rng = np.random.default_rng(0)
    for _ in range(20):
        _, caption = grammar.sample_pair(rng, "train")
        ids = loaded(caption, padding="max_length", max_length=16, truncation=True).input_ids
        assert ids == tokenizer(caption, padding="max_length", max_length=16, truncation=True).input_ids
        assert len(ids) == 16 and ids[-1] == tokenizer.eos_token_id
        assert len(tokenizer(caption).input_ids) == len(caption.split()) + 2


def test_build_tokenizer_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        tw_model.build_tokenizer([], max_length=16)
    with pytest.raises(ValueError):
        tw_model.build_tokenizer(["red"], max_length=2)


def test_components_shapes(tokenizer: CLIPTokenizer) -> None:
    torch.manual_seed(0)
    vae = tw_model.build_vae(32)
    text_encoder = tw_model.build_text_encoder(tokenizer)
    unet = tw_model.build_unet(8, text_encoder.config.hidden_size)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        assert z.shape == (2, 4, 8, 8)
        assert vae.decode(z).sample.shape == x.shape
        ids = tokenizer(["a red circle", ""], padding="max_length", max_length=16, return_tensors="pt").input_ids
        ctx = text_encoder(ids)[0]
        assert ctx.shape == (2, 16, text_encoder.config.hidden_size)
        assert unet(z, torch.tensor([10, 500]), ctx).sample.shape == z.shape
    total = sum(tw_model.count_params(m) for m in (vae, text_encoder, unet))
    assert total * 4 <= 25 * 2**20, "shipped fp32 weights must fit in 25 MB"


def test_data_is_reproducible() -> None:
    a, b = render_pool(8, seed=3), render_pool(8, seed=3)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert a.images.dtype == np.uint8 and a.images.shape == (8, 3, 32, 32)
    x = a.as_float(slice(0, 2))
    assert x.min() >= -1 and x.max() <= 1
    i1, i2 = batch_indices(10, 4, seed=1), batch_indices(10, 4, seed=1)
    assert all(np.array_equal(next(i1), next(i2)) for _ in range(5))
    with pytest.raises(ValueError):
        render_pool(0, seed=0)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        ToyTrainConfig(cfg_dropout=1.5).validate()
    with pytest.raises(ValueError):
        ToyTrainConfig(prediction_type="sample").validate()
    with pytest.raises(ValueError):
        ToyTrainConfig(unet_steps=0).validate()


def _check_pipeline_folder(folder: Path, steps: int = 2) -> None:
    index = json.loads((folder / "model_index.json").read_text())
    assert index["requires_safety_checker"] is False
    assert index["safety_checker"] == [None, None] and index["feature_extractor"] == [None, None]
    assert list((folder / "unet").glob("*.safetensors")) and list((folder / "vae").glob("*.safetensors"))
    assert (folder / "training_config.json").exists()
    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    assert size == 32
    out = pipe(
        ["a red circle", "two blue squares"],
        num_inference_steps=steps,
        guidance_scale=4.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert out.shape == (2, 32, 32, 3)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_quick_training_gives_loadable_stock_pipeline(quick_pipeline_dir: Path) -> None:
    _check_pipeline_folder(quick_pipeline_dir)
    cfg = json.loads((quick_pipeline_dir / "training_config.json").read_text())
    assert cfg == json.loads(json.dumps(ToyTrainConfig.quick().__dict__))


@pytest.mark.skipif(not (WEIGHTS / "model_index.json").exists(), reason="shipped weights not built yet")
def test_shipped_weights_load_and_fit_budget() -> None:
    total = sum(f.stat().st_size for f in WEIGHTS.rglob("*.safetensors"))
    assert total <= 25 * 2**20
    _check_pipeline_folder(WEIGHTS)
