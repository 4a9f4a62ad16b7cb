"""Prompt files (TXT, CSV with a prompt column), built-in sets, balanced subsets, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from noisesearch.prompts import PromptError, PromptItem, load_prompt_file, load_prompts, read_prompts, select_prompts


def test_txt_skips_blank_and_comment_lines(tmp_path: Path) -> None:
    f = tmp_path / "p.txt"
    f.write_text("# a comment\na red circle\n\n  two blue squares  \n")
    assert load_prompt_file(f) == [PromptItem("a red circle"), PromptItem("two blue squares")]


def test_drawbench_style_csv_with_extra_columns_and_bom(tmp_path: Path) -> None:
    f = tmp_path / "drawbench.csv"
    f.write_bytes(
        '\ufeffPrompts,Category,Note\n"A red colored car.",Colors,x\n"A cube, on a sphere",Positional,\n ,Empty,\n'.encode()
    )
    assert load_prompt_file(f) == [
        PromptItem("A red colored car.", "Colors"),
        PromptItem("A cube, on a sphere", "Positional"),
    ]


def test_csv_named_column(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_text("id,caption\n1,a red circle\n")
    assert load_prompt_file(f, column="Caption") == [PromptItem("a red circle")]
    with pytest.raises(PromptError, match=r"has no 'text' column \(columns: \['id', 'caption'\]\)"):
        load_prompt_file(f, column="text")


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("nocol.csv", "text,category\nfoo,bar\n", "has no 'prompt' column (columns: ['text', 'category'])"),
        ("empty.csv", "", "contains no prompts (it is empty; expected a header row)"),
        ("header.csv", "prompt,category\n", "contains no prompts"),
        ("blank.csv", "prompt\n  \n\n", "contains no prompts"),
        ("empty.txt", "\n\n# only a comment\n", "contains no prompts"),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path: Path, name: str, content: str, needle: str) -> None:
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(PromptError) as err:
        load_prompt_file(f)
    assert needle in str(err.value) and str(f) in str(err.value)


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="cannot read prompts file"):
        load_prompt_file(tmp_path / "missing.txt")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(PromptError, match="cannot read prompts file"):
        load_prompt_file(binary)
    with pytest.raises(
        PromptError, match="neither a prompts file .* nor a built-in set; built-in sets: toyworld-heldout"
    ):
        load_prompts("no-such-set")


def test_relative_paths_resolve_against_base_dir(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("a red circle\n")
    assert load_prompts("p.txt", base_dir=tmp_path) == [PromptItem("a red circle")]


def test_select_dedupes_filters_and_balances_categories() -> None:
    items = [PromptItem(f"{c}{i}", c) for c in "abc" for i in range(5)] + [PromptItem("a0", "a")]
    assert len(select_prompts(items)) == 15  # the duplicate "a0" is dropped
    chosen = select_prompts(items, limit=7)
    assert [i.text for i in chosen] == ["a0", "a1", "a2", "b0", "b1", "c0", "c1"]  # 3/2/2, file order
    assert select_prompts(items, limit=7) == chosen  # deterministic
    assert [i.text for i in select_prompts(items, limit=2, categories=["c"])] == ["c0", "c1"]
    with pytest.raises(PromptError, match="unknown prompt category 'd'; the prompts have: a, b, c"):
        select_prompts(items, categories=["d"])


def test_cli_read_prompts_keeps_its_contract(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_text("prompt,category\na red circle,color\ntwo blue squares,count\n")
    assert read_prompts(None, f) == ["a red circle", "two blue squares"]
    assert read_prompts("  a red circle ", None) == ["a red circle"]
    with pytest.raises(ValueError, match="exactly one of"):
        read_prompts("x", f)
    with pytest.raises(ValueError, match="--prompt is empty"):
        read_prompts(" ", None)


def test_builtin_toyworld_heldout_set() -> None:
    grammar = pytest.importorskip("noisesearch.toyworld.grammar")
    items = load_prompts("toyworld-heldout")
    assert [(i.category, i.text) for i in items] == grammar.heldout_prompts()
    chosen = select_prompts(items, limit=20)
    counts = {c: sum(i.category == c for i in chosen) for c in {i.category for i in items}}
    assert counts == {"shape": 5, "counting": 5, "color_binding": 5, "spatial": 5}
