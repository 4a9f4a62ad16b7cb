"""VLM judges (VQAScore, the rubric grader) on tiny random-weight Qwen2.5-VL and Idefics3 checkpoints.

The checkpoints are built from configs with hand-written tokenizers and loaded through the same
offline loader as real ones. The reference for every score is transformers' own processor and
forward, one image at a time, with no padding.
"""

from __future__ import annotations

import math

import pytest
import torch

from noisesearch.testing.vlm_tiny import build_tiny_idefics3, build_tiny_qwen2_5_vl
from noisesearch.verifiers.base import check_verifier_options, load_verifier
from noisesearch.verifiers.ensemble import make_ensemble
from noisesearch.verifiers.vlm import (
    ASPECTS,
    VQASCORE_QUESTION,
    NumberTokens,
    VLMGraderVerifier,
    VQAScoreVerifier,
    fill,
    parse_aspects,
    truncate_prompt,
    yes_token_ids,
)
from noisesearch.verifiers.vlm_model import load_judge, qwen_pixel_values

FAMILIES = {"qwen2_5_vl": build_tiny_qwen2_5_vl, "idefics3": build_tiny_idefics3}
PROMPTS = ["a red cube", "two blue cats on the left of a big dog", "a cat", "a small yellow sphere above a green cube"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {name: build(tmp_path_factory.mktemp(name)) for name, build in FAMILIES.items()}


@pytest.fixture(scope="module", params=list(FAMILIES))
def judge(request, folders):
    return load_judge(folders[request.param], "cpu", dtype="float32", max_image_size=0)


def images(n: int, seed: int = 0, h: int = 64, w: int = 48) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def reference_logprobs(judge, image: torch.Tensor, question: str, forced: list[int] = ()) -> torch.Tensor:
    """transformers' processor + forward on one image, no padding: log-softmax at the last positions."""
    inputs = judge.processor(text=[judge.chat(question)], images=[[image]], return_tensors="pt", do_rescale=False)
    if forced:
        extra = torch.tensor([list(forced)])
        inputs["input_ids"] = torch.cat([inputs["input_ids"], extra], 1)
        inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(extra)], 1)
        if "mm_token_type_ids" in inputs:
            inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(extra)], 1)
    with torch.no_grad():
        logits = judge.model(**inputs).logits[0]
    return logits[-1 - len(forced) :].float().log_softmax(-1)


def test_vqascore_equals_forward_logits_one_image_at_a_time(judge):
    v = VQAScoreVerifier(judge)
    x = images(4)
    with torch.no_grad():
        batched = v.score(x, PROMPTS)
    yes = yes_token_ids(judge.tokenizer)
    for i, p in enumerate(PROMPTS):
        ref = reference_logprobs(judge, x[i], fill(VQASCORE_QUESTION, p))[0]
        assert batched[i].item() == pytest.approx(torch.logsumexp(ref[yes], 0).item(), abs=1e-4)
    assert batched.max() <= 0 and len(set(batched.tolist())) == 4


def test_batch_invariance(judge):
    v = VQAScoreVerifier(judge)
    x = images(4, seed=1)
    with torch.no_grad():
        full = v.score(x, PROMPTS)
        alone = torch.cat([v.score(x[i : i + 1], PROMPTS[i : i + 1]) for i in range(4)])
        order = [2, 0, 3, 1]
        permuted = v.score(x[order], [PROMPTS[i] for i in order])
    assert torch.allclose(full, alone, atol=1e-4)
    assert torch.allclose(full[order], permuted, atol=1e-4)


def test_grader_expected_value_matches_forward_logits(judge):
    g = VLMGraderVerifier(judge, aspects="accuracy,quality")
    nt = g.numbers
    assert nt.forced == (judge.tokenizer.convert_tokens_to_ids("1"),)  # "10" is "1","0" in both tokenizers
    x = images(2, seed=2)
    with torch.no_grad():
        per = g.aspect_scores(x, PROMPTS[:2])
    for i in range(2):
        for j, aspect in enumerate(g.aspects):
            lp = reference_logprobs(judge, x[i], g.question(aspect, PROMPTS[i]), forced=list(nt.forced))
            p = lp[0, list(nt.ids)].softmax(0)  # P(first token = d), renormalised over 0..9
            q = lp[1, nt.zero_id].exp()  # P("0" | "1")
            dist = torch.cat([p[:1], p[1:2] * (1 - q), p[2:], p[1:2] * q])  # values 0, 1, 2..9, 10
            expected = (dist * torch.arange(11.0)).sum()
            assert per[i, j].item() == pytest.approx(expected.item(), abs=1e-4)
    assert ((per >= 0) & (per <= 10)).all()


def test_grader_score_is_aspect_mean_and_details_kept(judge):
    g = VLMGraderVerifier(judge, aspects=None, mode="scale")
    x = images(3, seed=3)
    with torch.no_grad():
        s = g.score(x, PROMPTS[:3])
        assert list(g.last_details) == list(ASPECTS)
        assert torch.allclose(s, torch.stack(list(g.last_details.values()), 1).mean(1))
        alone = g.score(x[1:2], PROMPTS[1:2])
    g2 = VLMGraderVerifier(judge, aspects="consistency,resonance", mode="yesno")
    with torch.no_grad():
        y = g2.score(x, PROMPTS[:3])
    assert list(g2.last_details) == ["consistency_and_cohesion", "emotional_or_thematic_resonance"]
    stacked = torch.stack(list(g2.last_details.values()), 1)
    assert torch.allclose(y, stacked.mean(1)) and ((y > 0) & (y < 1)).all()
    assert s[1].item() == pytest.approx(alone.item(), abs=1e-4)


def test_long_prompts_keep_their_first_tokens(judge):
    long = " ".join(["a red cube on the left of a blue sphere"] * 40)  # 400 words, one token each
    short = " ".join(long.split()[:12])
    tok = judge.tokenizer
    assert truncate_prompt(short, tok, 12) == short  # short enough: unchanged
    assert truncate_prompt(long, tok, 12) == short
    v = VQAScoreVerifier(judge, max_prompt_tokens=12)
    x = images(2, seed=4)
    with torch.no_grad():
        s = v.score(x, [long, short])
        full = VQAScoreVerifier(judge, max_prompt_tokens=1000).score(x[:1], [long])
    assert s[0].item() == pytest.approx(VQAScoreVerifier(judge).score(x[:1], [short]).item(), abs=1e-4)
    assert s[0].item() != pytest.approx(full.item(), abs=1e-6)  # the cut changes what the judge reads


def test_number_tokens_reject_tokenizers_without_digit_tokens(judge):
    class Words:
        unk_token_id = 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [0] if text.isdigit() else [5]}

    with pytest.raises(ValueError, match="one token per digit"):
        NumberTokens.of(Words())


def test_qwen_torch_preprocessing_matches_processor_and_is_differentiable(folders):
    judge = load_judge(folders["qwen2_5_vl"], dtype="float32", max_image_size=0)
    x = images(2, seed=5, h=70, w=45)  # resized by smart_resize to multiples of 28
    pixels, grid = qwen_pixel_values(x, judge.processor.image_processor)
    ref = judge.processor.image_processor(images=list(x), do_rescale=False, return_tensors="pt")
    assert torch.equal(grid, ref["image_grid_thw"])
    assert torch.allclose(pixels, ref["pixel_values"], atol=1e-5)
    v = VQAScoreVerifier(judge)
    assert v.differentiable
    x = x.requires_grad_(True)
    v.score(x, PROMPTS[:2]).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_generic_family_is_not_differentiable(folders):
    assert not VQAScoreVerifier(load_judge(folders["idefics3"])).differentiable


def test_max_image_size_downscales_before_the_processor(folders):
    big = load_judge(folders["qwen2_5_vl"], max_image_size=0)
    small = load_judge(folders["qwen2_5_vl"], max_image_size=28)
    x = images(1, seed=6, h=112, w=112)
    with torch.no_grad():
        a, b = VQAScoreVerifier(big).score(x, PROMPTS[:1]), VQAScoreVerifier(small).score(x, PROMPTS[:1])
    assert math.isfinite(a.item()) and math.isfinite(b.item()) and a.item() != pytest.approx(b.item(), abs=1e-6)


def test_factories_load_from_a_folder_and_env(folders, monkeypatch):
    folder = str(folders["qwen2_5_vl"])
    v = load_verifier("vqascore", model=folder, max_image_size=56)
    g = load_verifier("vlm-grader", model=folder, aspects="accuracy", mode="yesno", max_image_size="56")
    assert v.name == "vqascore" and g.aspects == ("accuracy_to_prompt",)
    monkeypatch.setenv("NOISESEARCH_VLM_PATH", folder)
    ens = make_ensemble("rank", "vqascore,vlm-grader")  # members loaded by name, default checkpoint from env
    x = images(3, seed=7)
    with torch.no_grad():
        s = ens.score(x, PROMPTS[:3])
    assert s.shape == (3,) and set(ens.last_details) >= {"vqascore", "vlm-grader", "vlm-grader.accuracy_to_prompt"}
    z = make_ensemble("zscore", [v, g])
    with torch.no_grad():
        assert torch.isfinite(z.score(x, PROMPTS[:3])).all()


def test_missing_default_checkpoint_names_hub_id_and_option(tmp_path, monkeypatch):
    monkeypatch.delenv("NOISESEARCH_VLM_PATH", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"Qwen/Qwen2\.5-VL-3B-Instruct.*model=PATH"):
        load_verifier("vqascore", cache_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="HuggingFaceTB/SmolVLM-256M-Instruct"):
        load_verifier("vlm-grader", model="HuggingFaceTB/SmolVLM-256M-Instruct", cache_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_verifier("vqascore", model=str(tmp_path / "nowhere"))


@pytest.mark.parametrize(
    "name,options,message",
    [
        ("vqascore", {"question": "Is this a cat?"}, "must contain {prompt}"),
        ("vqascore", {"aspects": "accuracy"}, "has no option aspects"),
        ("vqascore", {"dtype": "int8"}, "unknown dtype"),
        ("vqascore", {"max_image_size": 10}, "max_image_size"),
        ("vqascore", {"max_image_size": "big"}, "max_image_size"),
        ("vqascore", {"max_prompt_tokens": 0}, "max_prompt_tokens"),
        ("vlm-grader", {"aspects": "accuracy,beauty"}, "unknown aspect 'beauty'"),
        ("vlm-grader", {"aspects": "accuracy,accuracy_to_prompt"}, "listed twice"),
        ("vlm-grader", {"aspects": " , "}, "aspects is empty"),
        ("vlm-grader", {"mode": "json"}, "mode must be one of"),
        ("vlm-grader", {"batch_size": -1}, "batch_size"),
        ("vlm-grader", {"question": "x {prompt}"}, "has no option question"),
    ],
)
def test_bad_options_fail_before_loading(name, options, message):
    with pytest.raises(ValueError, match=message):
        check_verifier_options(name, options)
    with pytest.raises((ValueError, TypeError)):
        load_verifier(name, model="/definitely/not/here", **options)  # the option error comes before the lookup


def test_good_options_pass_validation():
    check_verifier_options(
        "vqascore",
        {
            "model": "Qwen/Qwen2.5-VL-7B-Instruct",
            "dtype": "bf16",
            "question": "Is '{prompt}' shown? Answer yes or no.",
            "max_image_size": 0,
        },
    )
    check_verifier_options("vlm-grader", {"aspects": "accuracy,originality,quality", "mode": "yesno"})
    assert parse_aspects(None) == tuple(ASPECTS) and len(ASPECTS) == 5


def test_search_keeps_per_aspect_scores_in_candidate_info(folders):
    import json

    import noisesearch
    from noisesearch.testing import StubAdapter

    g = load_verifier("vlm-grader", model=str(folders["idefics3"]), aspects="accuracy,quality")
    r = noisesearch.search(StubAdapter(), "a red cube", verifier=g, candidates=3, steps=2)
    report = json.loads(json.dumps(r.to_dict()))
    for c, row in zip(r.candidates, report["candidates"]):
        details = row["info"]["verifier_details"]
        assert list(details) == ["accuracy_to_prompt", "visual_quality_and_realism"]
        assert c.score == pytest.approx(sum(details.values()) / 2, abs=1e-5)


def test_a_template_that_repeats_the_question_is_refused_at_load(folders, tmp_path):
    import shutil

    from transformers import AutoProcessor

    folder = tmp_path / "twice"
    shutil.copytree(folders["qwen2_5_vl"], folder)
    proc = AutoProcessor.from_pretrained(folder, local_files_only=True)
    proc.chat_template = proc.chat_template.replace(
        "{{ content['text'] }}", "{{ content['text'] }} {{ content['text'] }}"
    )
    proc.save_pretrained(folder)
    with pytest.raises(ValueError, match="does not place the question once"):
        load_judge(folder)


def test_an_empty_batch_scores_nothing(judge):
    empty = torch.zeros(0, 3, 32, 32)
    assert VQAScoreVerifier(judge).score(empty, []).shape == (0,)
    assert VLMGraderVerifier(judge).score(empty, []).shape == (0,)
