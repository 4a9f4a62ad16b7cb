"""Offline checkpoint resolution (option > environment variable > HF cache > reference package
folders), safe and strict loading, and the verifier catalog's found/missing scan."""

from __future__ import annotations

import pytest
import torch

from noisesearch.io.checkpoints import (
    HubFile,
    HubFolder,
    load_strict,
    load_weights,
    parse_dtype,
    resolve_file,
    resolve_folder,
)
from noisesearch.verifiers import available_verifiers
from noisesearch.verifiers.catalog import CATALOG, HPSV2, register_all, scan

SPEC = HubFile(
    "weights.pt", ("org/repo",), "NSTEST_WEIGHTS", option="path", legacy_dirs=("$NSTEST_ROOT|~/.cache/nstest",)
)
FOLDER = HubFolder(("org/model",), ("config.json",), "NSTEST_MODEL", option="path", any_of=("a.bin", "b.bin"))


def _cache_file(hub, repo: str, name: str, data: bytes = b"x"):
    root = hub / ("models--" + repo.replace("/", "--"))
    (root / "snapshots" / "rev").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text("rev")
    (root / "snapshots" / "rev" / name).write_bytes(data)
    return root / "snapshots" / "rev" / name


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for spec in (
        [SPEC, FOLDER] + [s for e in CATALOG for g in e.needs for s in g] + [s for e in CATALOG for s in e.optional]
    ):
        if spec.env_var:
            monkeypatch.delenv(spec.env_var, raising=False)
    for var in ("NSTEST_ROOT", "HPS_ROOT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_lookup_order_option_env_cache_legacy(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    legacy = tmp_path / "home" / ".cache" / "nstest"
    legacy.mkdir(parents=True)
    (legacy / "weights.pt").write_bytes(b"legacy")
    assert resolve_file(SPEC, cache_dir=hub) == legacy / "weights.pt"
    monkeypatch.setenv("NSTEST_ROOT", str(tmp_path / "root"))  # "$VAR|default": the variable wins
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "weights.pt").write_bytes(b"root")
    assert resolve_file(SPEC, cache_dir=hub) == tmp_path / "root" / "weights.pt"
    cached = _cache_file(hub, "org/repo", "weights.pt")
    assert resolve_file(SPEC, cache_dir=hub) == cached
    env = tmp_path / "env"
    env.mkdir()
    (env / "weights.pt").write_bytes(b"env")
    monkeypatch.setenv("NSTEST_WEIGHTS", str(env))
    assert resolve_file(SPEC, cache_dir=hub) == env / "weights.pt"
    explicit = tmp_path / "mine.pt"
    explicit.write_bytes(b"mine")
    assert resolve_file(SPEC, explicit, cache_dir=hub) == explicit


def test_wrong_explicit_locations_fail_without_falling_back(tmp_path, monkeypatch):
    _cache_file(tmp_path / "hub", "org/repo", "weights.pt")
    with pytest.raises(FileNotFoundError, match=r"option path=.*weights\.pt"):
        resolve_file(SPEC, tmp_path / "nowhere", cache_dir=tmp_path / "hub")
    monkeypatch.setenv("NSTEST_WEIGHTS", str(tmp_path / "nowhere.pt"))
    with pytest.raises(FileNotFoundError, match="environment variable NSTEST_WEIGHTS"):
        resolve_file(SPEC, cache_dir=tmp_path / "hub")


def test_missing_file_message_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        resolve_file(SPEC, cache_dir=tmp_path)
    msg = str(err.value)
    for needle in (
        "weights.pt",
        "org/repo",
        "hf download org/repo weights.pt",
        "path=PATH",
        "NSTEST_WEIGHTS",
        "nstest",
    ):
        assert needle in msg


def test_folders_need_their_required_files(tmp_path):
    hub = tmp_path / "hub"
    cfg = _cache_file(hub, "org/model", "config.json")
    with pytest.raises(FileNotFoundError, match=r"org/model .*hf download org/model"):
        resolve_folder(FOLDER, cache_dir=hub)  # weights missing: incomplete snapshot
    _cache_file(hub, "org/model", "b.bin")
    assert resolve_folder(FOLDER, cache_dir=hub) == cfg.parent
    with pytest.raises(FileNotFoundError, match="lacks config.json, a.bin or b.bin"):
        resolve_folder(FOLDER, tmp_path)


def test_safe_loading(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "a.safetensors"))
    assert torch.equal(load_weights(tmp_path / "a.safetensors")["w"], torch.ones(2))
    torch.save({"w": torch.ones(2)}, tmp_path / "b.pt")
    assert torch.equal(load_weights(tmp_path / "b.pt")["w"], torch.ones(2))
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pt")  # a pickled module, not tensors
    with pytest.raises(ValueError, match="weights_only=True"):
        load_weights(tmp_path / "pickled.pt")


def test_strict_loading_drops_only_declared_unused_keys():
    m = torch.nn.Sequential(torch.nn.Linear(2, 3))
    sd = {"0.weight": torch.ones(3, 2), "0.bias": torch.zeros(3), "proj.weight": torch.ones(1), "ids": torch.ones(1)}
    load_strict(m, sd, "f.pt", unused=("proj.", "ids"))
    assert torch.equal(m[0].weight, torch.ones(3, 2))
    with pytest.raises(ValueError, match=r"1 unexpected \(proj\.weight\)"):
        load_strict(m, sd, "f.pt", unused=("ids",))
    with pytest.raises(ValueError, match=r"1 mis-shaped \(0\.bias: file \(4,\) vs model \(3,\)\)"):
        load_strict(m, {**sd, "0.bias": torch.zeros(4)}, "f.pt", unused=("proj.", "ids"))


def test_catalog_registers_and_scans(tmp_path):
    register_all()
    names = {e.name for e in CATALOG}
    assert names == {"clipscore", "hpsv2", "hpsv2.1", "imagereward", "pickscore", "aesthetic", "vqascore", "vlm-grader"}
    assert names <= set(available_verifiers())
    hub = tmp_path / "hub"
    status = {a.name: a for a in scan(cache_dir=hub)}
    assert not any(a.ready for a in status.values())
    assert "xswu/HPSv2" in status["hpsv2"].missing[0] and "NOISESEARCH_HPSV2_PATH" in status["hpsv2"].missing[0]
    assert "trl-lib/ddpo-aesthetic-predictor" in " ".join(status["aesthetic"].missing)
    path = _cache_file(hub, "xswu/HPSv2", HPSV2.filename)
    _cache_file(hub, "trl-lib/ddpo-aesthetic-predictor", "aesthetic-model.pth")
    status = {a.name: a for a in scan(cache_dir=hub)}
    assert status["hpsv2"].ready and status["hpsv2"].found == {"xswu/HPSv2/HPS_v2_compressed.pt": path}
    assert not status["hpsv2.1"].ready
    assert (
        len(status["aesthetic"].missing) == 1
        and "timm/vit_large_patch14_clip_224.openai" in status["aesthetic"].missing[0]
    )
    # CLIPScore's default weights are not built in: listed as missing, with where to get them
    assert not status["clipscore"].ready
    assert "hf download timm/vit_large_patch14_clip_224.openai" in status["clipscore"].missing[0]
    assert "option pretrained=PATH" in status["clipscore"].missing[0]
    clip_file = _cache_file(hub, "timm/vit_large_patch14_clip_224.openai", "open_clip_model.safetensors")
    status = {a.name: a for a in scan(cache_dir=hub)}
    assert status["clipscore"].ready and list(status["clipscore"].found.values()) == [clip_file.parent]
    assert status["aesthetic"].ready


def test_parse_dtype():
    assert parse_dtype("bf16") is torch.bfloat16 and parse_dtype(torch.float16) is torch.float16
    with pytest.raises(ValueError, match="float32, float16, bfloat16"):
        parse_dtype("int8")
