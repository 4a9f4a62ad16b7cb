"""Verifier options are checked by name and value before any weights are read."""

from __future__ import annotations

import pytest
import torch

from noisesearch.verifiers.base import (
    _DESCRIPTIONS,
    _REGISTRY,
    _VALIDATORS,
    check_verifier_options,
    register_verifier,
    verifier_option_names,
)


@pytest.fixture
def scratch_verifier():
    loads: list[dict] = []

    def validate(scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")

    @register_verifier("scratch-options", "test only", validate=validate)
    def factory(device: str | torch.device = "cpu", scale: float = 1.0):
        loads.append({"scale": scale})
        raise AssertionError("checking options must not build the verifier")

    yield loads
    for table in (_REGISTRY, _DESCRIPTIONS, _VALIDATORS):
        table.pop("scratch-options", None)


def test_option_names_come_from_the_factory_signature(scratch_verifier):
    assert verifier_option_names("scratch-options") == ("scale",)
    assert "path" in verifier_option_names("toydetect")


def test_unknown_option_is_named_with_the_accepted_ones(scratch_verifier):
    with pytest.raises(ValueError, match=r"no option colour; its options are: scale"):
        check_verifier_options("scratch-options", {"colour": 1})


def test_validator_rejects_a_bad_value_without_loading(scratch_verifier):
    with pytest.raises(ValueError, match="scale must be > 0"):
        check_verifier_options("scratch-options", {"scale": -1.0})
    check_verifier_options("scratch-options", {"scale": 2.0})
    assert scratch_verifier == []


def test_validator_sees_the_factory_defaults_for_options_not_given():
    seen: list[dict] = []

    def validate(*, scale: float, offset: float) -> None:  # no defaults of its own to drift
        seen.append({"scale": scale, "offset": offset})

    @register_verifier("scratch-defaults", "test only", validate=validate)
    def factory(device: str | torch.device = "cpu", scale: float = 3.0, offset: float = -1.0):
        raise AssertionError("checking options must not build the verifier")

    try:
        check_verifier_options("scratch-defaults", {"offset": 0.5})
        assert seen == [{"scale": 3.0, "offset": 0.5}]
    finally:
        for table in (_REGISTRY, _DESCRIPTIONS, _VALIDATORS):
            table.pop("scratch-defaults", None)


def test_unknown_verifier_lists_the_choices():
    with pytest.raises(ValueError, match="unknown verifier 'nope'; choose one of: .*toydetect"):
        check_verifier_options("nope", {})


@pytest.mark.parametrize(
    "text",
    [
        "clipscore(pretrained=/no/such/open_clip_model.bin)",
        "aesthetic(path=./missing/sac+logos+ava1-l14-linearMSE.safetensors)",
        "hpsv2(path=HPS_v2.1_compressed.pt)",  # a bare file name: relative to the working folder
        "pickscore(path=~/no-such-pickscore-folder)",
        "imagereward(med_config=/no/med_config.json)",
        "vlm-grader(model=./no-such-vlm)",
    ],
)
def test_a_missing_local_file_is_refused_before_any_load(text, tmp_path, monkeypatch):
    from noisesearch.verifiers.spec import VerifierSpec

    monkeypatch.chdir(tmp_path)
    spec = VerifierSpec.parse(text)
    key, value = spec.options[0]
    with pytest.raises(ValueError, match=rf"verifier '{spec.name}': {key}=.* does not exist"):
        spec.validate()
    # the same option naming a file that is there passes this check
    path = tmp_path / "here.safetensors"
    path.write_bytes(b"")
    from noisesearch.verifiers.base import check_local_path

    check_local_path(spec.name, key, str(path))


@pytest.mark.parametrize(
    "text",
    ["pickscore(path=yuvalkirstain/PickScore_v1)", "clipscore(model=ViT-B-32, pretrained=openai)"],
)
def test_hub_ids_and_model_names_are_left_to_the_loader(text):
    from noisesearch.verifiers.spec import VerifierSpec

    VerifierSpec.parse(text).validate()
