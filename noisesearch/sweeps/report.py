"""Reports of a sweep: scaling plots (PNG) and a self-contained HTML page.

Scores are aggregated in two stages, so that every prompt weighs the same whatever its number of
seeds: the mean over seeds per prompt, then the mean and its standard error over prompts,
``s.e. = std(ddof=1) / sqrt(n_prompts)`` (0 for a single prompt). The scaling plots (Ma et al.
2025, Fig. 1 style) put the NFE budget on the x axis (log 2) and draw one line per strategy (and
search verifier) with ±1 s.e. error bars: one panel for the search score under each search verifier
(the quantity the search maximised) and one per evaluation metric (held-out verifiers,
``ground_truth``), which is what tells a better search from one that games its verifier.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from noisesearch.io.results import slug
from noisesearch.sweeps import CONFIG_FILE, read_results

#: images are embedded in the HTML (base64) when together they are at most this big, else linked
EMBED_LIMIT_BYTES = 20 * 1024 * 1024
#: image cells are drawn at least this many CSS pixels wide (small images upscaled, pixelated)
CELL_PX = 112


@dataclass(frozen=True)
class Stat:
    """Mean and standard error over prompts (each prompt first averaged over its seeds)."""

    mean: float
    se: float
    n: int  # prompts


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote."""

    html: Path  # the HTML page
    plots: tuple[Path, ...]  # scaling plots, one PNG per model
    rows: int  # rows reported
    final: bool  # False when read from the shards of an unfinished sweep


def aggregate(values: Iterable[tuple[str, float | None]]) -> Stat | None:
    """(prompt, value) pairs -> mean ± s.e. over prompts of the per-prompt means; None if no value."""
    per_prompt: dict[str, list[float]] = defaultdict(list)
    for prompt, value in values:
        if value is not None and math.isfinite(value):
            per_prompt[prompt].append(float(value))
    means = [sum(v) / len(v) for v in per_prompt.values()]
    n = len(means)
    if n == 0:
        return None
    mean = sum(means) / n
    se = math.sqrt(sum((m - mean) ** 2 for m in means) / (n - 1) / n) if n > 1 else 0.0
    return Stat(mean, se, n)


def metric_value(row: dict[str, Any], metric: str) -> float | None:
    """``search_score`` or an evaluation metric's score of a row's best image."""
    if metric == "search_score":
        return row.get("search_score")
    return (row.get("eval") or {}).get(metric)


def _ordered(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def _axes(rows: Sequence[dict[str, Any]], config: dict[str, Any] | None = None) -> dict[str, list[Any]]:
    """Values of each sweep axis present in ``rows``, in the config's order where it is known."""
    order: dict[str, list[Any]] = {}
    if config:
        from noisesearch.sweeps import SweepConfig

        try:
            cfg = SweepConfig.from_dict(config)
            order = {
                "models": list(cfg.models),
                "strategies": [s.display for s in cfg.strategies],
                "search_verifiers": list(cfg.search_verifiers),
                "evals": list(cfg.eval_verifiers),
            }
        except ValueError:  # a config from another version: fall back to the rows' order
            order = {}

    def axis(name: str, values: Iterable[Any]) -> list[Any]:
        present = _ordered(values)
        return [v for v in order.get(name, []) if v in present] + [v for v in present if v not in order.get(name, [])]

    return {
        "models": axis("models", (r["model"] for r in rows)),
        "strategies": axis("strategies", (r["strategy"] for r in rows)),
        "search_verifiers": axis("search_verifiers", (r["search_verifier"] for r in rows)),
        "budgets": sorted({r["budget_nfe"] for r in rows}),
        "evals": axis("evals", (k for r in rows for k in (r.get("eval") or {}))),
        "categories": sorted({r["category"] for r in rows if r.get("category")}),
    }


def _stat(rows: Iterable[dict[str, Any]], metric: str) -> Stat | None:
    return aggregate((r["prompt"], metric_value(r, metric)) for r in rows)


# ------------------------------------------------------------------------------------ plots


def scaling_plot(rows: Sequence[dict[str, Any]], model: str, path: Path, config: dict[str, Any] | None = None) -> Path:
    """Score vs NFE for one model: a panel per search verifier (search score) and per eval metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    rows = [r for r in rows if r["model"] == model]
    ax_info = _axes(rows, config)
    panels = [("search_score", v) for v in ax_info["search_verifiers"]] + [(e, None) for e in ax_info["evals"]]
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.4 * cols, 3.5 * nrows), squeeze=False)
    many_verifiers = len(ax_info["search_verifiers"]) > 1
    for index, (metric, verifier) in enumerate(panels):
        ax = axes[index // cols][index % cols]
        lines = [(s, v) for s in ax_info["strategies"] for v in ax_info["search_verifiers"] if verifier in (None, v)]
        n_prompts = 0
        for line_index, (strategy, v) in enumerate(lines):
            # dodge: shift each line a little along the (log) x axis so equal scores stay visible
            dodge = 2 ** (0.04 * (line_index - (len(lines) - 1) / 2)) if len(ax_info["budgets"]) > 1 else 1.0
            xs, ys, es = [], [], []
            for budget in ax_info["budgets"]:
                sel = [
                    r
                    for r in rows
                    if r["strategy"] == strategy and r["search_verifier"] == v and r["budget_nfe"] == budget
                ]
                st = _stat(sel, metric)
                if st is not None:
                    xs.append(budget * dodge)
                    ys.append(st.mean)
                    es.append(st.se)
                    n_prompts = max(n_prompts, st.n)
            if xs:
                label = f"{strategy} · {v}" if (many_verifiers and verifier is None) else strategy
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label)
        title = f"search score ({verifier})" if metric == "search_score" else f"{metric} of the chosen image"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("budget (NFEs per prompt)")
        ax.set_ylabel(f"mean ± s.e. over {n_prompts} prompts", fontsize=8)
        if len(ax_info["budgets"]) > 1:
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(FixedLocator(ax_info["budgets"]))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticklabels([str(b) for b in ax_info["budgets"]])
        if metric == "ground_truth":
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    for index in range(len(panels), nrows * cols):
        axes[index // cols][index % cols].axis("off")
    fig.suptitle(f"{model}: score vs compute", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------ HTML

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:15px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}
img.plot{max-width:100%;border:1px solid #ddd}
.grid td{vertical-align:top;text-align:center}.grid td.l{text-align:left}
.grid img{image-rendering:pixelated;display:block;margin:auto}
.cap{font-size:11px;color:#444}.ok{color:#080;font-weight:bold}.no{color:#b00;font-weight:bold}
pre{background:#f7f7f7;padding:8px;font-size:12px;overflow:auto}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _fmt(st: Stat | None) -> str:
    return "–" if st is None else f"{st.mean:.3f} ± {st.se:.3f}"


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


class _Images:
    """Image sources for the page: base64 data URIs, or paths relative to the HTML file."""

    def __init__(self, results_dir: Path, html_dir: Path, embed: bool) -> None:
        self.results_dir = results_dir
        self.html_dir = html_dir
        self.embed = embed

    def src(self, relative: str) -> str | None:
        path = self.results_dir / relative
        if not path.is_file():
            return None
        if self.embed:
            return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
        return Path(os.path.relpath(path, self.html_dir)).as_posix()


def _configurations(
    rows: Sequence[dict[str, Any]], model: str, axes: dict[str, list[Any]]
) -> Iterator[tuple[Any, Any, Any, list[dict[str, Any]]]]:
    """(strategy, search verifier, budget, its rows) of ``model`` in axis order, skipping empty ones."""
    for strategy in axes["strategies"]:
        for verifier in axes["search_verifiers"]:
            for budget in axes["budgets"]:
                sel = [
                    r
                    for r in rows
                    if r["model"] == model
                    and r["strategy"] == strategy
                    and r["search_verifier"] == verifier
                    and r["budget_nfe"] == budget
                ]
                if sel:
                    yield strategy, verifier, budget, sel


def _summary_table(rows: Sequence[dict[str, Any]], model: str, axes: dict[str, list[Any]]) -> str:
    metrics = ["search_score", *axes["evals"]]
    head = "".join(f"<th>{_e(m)}</th>" for m in metrics)
    out = [
        '<table><tr><th class="l">strategy</th><th class="l">search verifier</th><th>budget (NFE)</th><th>prompts</th>'
        f"{head}<th>NFE used</th><th>verifier calls</th><th>seconds</th></tr>"
    ]
    for strategy, verifier, budget, sel in _configurations(rows, model, axes):
        cells = "".join(f"<td>{_fmt(_stat(sel, m))}</td>" for m in metrics)
        nfe = _mean(r["accounting"].get("nfe") for r in sel)
        calls = _mean(r["accounting"].get("verifier_calls") for r in sel)
        secs = _mean((r.get("timing") or {}).get("row") for r in sel)
        out.append(
            f'<tr><td class="l">{_e(strategy)}</td><td class="l">{_e(verifier)}</td><td>{budget}</td>'
            f"<td>{len({r['prompt'] for r in sel})}</td>{cells}<td>{nfe or 0:.0f}</td><td>{calls or 0:.1f}</td>"
            f"<td>{secs or 0:.2f}</td></tr>"
        )
    out.append("</table>")
    return "".join(out)


def _category_table(rows: Sequence[dict[str, Any]], model: str, metric: str, axes: dict[str, list[Any]]) -> str:
    cats = axes["categories"]
    out = [
        f'<h3>{_e(metric)} by category</h3><table><tr><th class="l">strategy</th><th class="l">search verifier</th>'
        "<th>budget</th>" + "".join(f"<th>{_e(c)}</th>" for c in cats) + "</tr>"
    ]
    for strategy, verifier, budget, sel in _configurations(rows, model, axes):
        cells = "".join(f"<td>{_fmt(_stat([r for r in sel if r.get('category') == c], metric))}</td>" for c in cats)
        out.append(
            f'<tr><td class="l">{_e(strategy)}</td><td class="l">{_e(verifier)}</td><td>{budget}</td>{cells}</tr>'
        )
    out.append("</table>")
    return "".join(out)


def _value_html(name: str, value: float | None) -> str:
    if value is None:
        return f"{_e(name)} –"
    if name == "ground_truth":
        return '<span class="ok">✓ ground truth</span>' if value >= 0.5 else '<span class="no">✗ ground truth</span>'
    return f"{_e(name)} {value:.3f}"


def _image_grid(
    rows: Sequence[dict[str, Any]], model: str, axes: dict[str, list[Any]], images: _Images, max_prompts: int
) -> str:
    sel = [r for r in rows if r["model"] == model]
    seed = min(r["seed"] for r in sel)
    columns = [(s, v, b) for s in axes["strategies"] for v in axes["search_verifiers"] for b in axes["budgets"]]
    by_cell = {(r["prompt"], r["strategy"], r["search_verifier"], r["budget_nfe"]): r for r in sel if r["seed"] == seed}
    prompts = _ordered(r["prompt"] for r in sorted(sel, key=lambda r: (r.get("category") or "", r["prompt"])))
    shown = prompts[:max_prompts]
    many_verifiers = len(axes["search_verifiers"]) > 1
    head = "".join(f"<th>{_e(s)}{'<br>' + _e(v) if many_verifiers else ''}<br>{b} NFE</th>" for s, v, b in columns)
    out = [
        f"<p>Best image per prompt and configuration (seed {seed}); caption: search score, then evaluation scores."
        + (f" First {len(shown)} of {len(prompts)} prompts." if len(shown) < len(prompts) else "")
        + f'</p><table class="grid"><tr><th class="l">prompt</th>{head}</tr>'
    ]
    for prompt in shown:
        cells = []
        for s, v, b in columns:
            row = by_cell.get((prompt, s, v, b))
            src = images.src(row["image"]) if row and row.get("image") else None
            if row is None or src is None:
                cells.append("<td>–</td>")
                continue
            score = row.get("search_score")
            caption = [f"score {score:.3f}" if score is not None else "score –"]
            caption += [_value_html(k, val) for k, val in (row.get("eval") or {}).items()]
            cells.append(
                f'<td><img src="{_e(src)}" width="{CELL_PX}" height="{CELL_PX}" alt="{_e(prompt)}">'
                f'<div class="cap">{"<br>".join(caption)}</div></td>'
            )
        category = next((r.get("category") for r in sel if r["prompt"] == prompt and r.get("category")), None)
        label = _e(prompt) + (f'<br><span class="cap">{_e(category)}</span>' if category else "")
        out.append(f'<tr><td class="l">{label}</td>{"".join(cells)}</tr>')
    out.append("</table>")
    return "".join(out)


def read_sweep_config(results_dir: Path) -> dict[str, Any] | None:
    """The ``config`` entry of a sweep folder's ``sweep_config.json`` (None when the file is absent);
    ``ValueError`` names the file when it is unreadable, not JSON or not of the expected shape."""
    path = results_dir / CONFIG_FILE
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        kind = "a folder, not a file" if path.is_dir() else f"unreadable ({e.strerror or e})"
        raise ValueError(f"sweep metadata {path} is {kind}; remove it and run the sweep again to rewrite it") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        cause = getattr(e, "msg", None) or ("not UTF-8" if isinstance(e, UnicodeDecodeError) else "nested too deeply")
        where = f" at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        raise ValueError(
            f"sweep metadata {path} is not valid JSON ({cause}{where}; half-written?); "
            "run the sweep again to rewrite it, or delete it to report without it"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise ValueError(
            f"sweep metadata {path} is not a sweep_config.json (expected an object with a 'config' object); "
            "run the sweep again to rewrite it, or delete it to report without it"
        )
    return doc["config"]


def write_report(
    results_dir: str | Path,
    out_dir: str | Path | None = None,
    embed: bool | None = None,
    max_prompts: int = 24,
) -> ReportFiles:
    """Writes ``report.html`` and ``plots/scaling_<model>.png`` for the sweep in ``results_dir``.

    Reads ``results.jsonl`` (or, for a sweep still running, the rows in its shards). ``embed``:
    True puts the images into the page as base64 (one file to share), False links them by relative
    path, None embeds when they total at most ``EMBED_LIMIT_BYTES``. ``max_prompts`` bounds the
    image grid per model.
    """
    from noisesearch.io.outputs import check_output_dir, make_output_dir
    from noisesearch.io.paths import user_path

    results = user_path(results_dir)
    rows, final = read_results(results)
    config = read_sweep_config(results)
    # the output place is checked before anything is written (default: the results folder itself)
    out = check_output_dir(results if out_dir is None else out_dir, "--out", files=("report.html",), folders=("plots",))
    make_output_dir(out)
    make_output_dir(out / "plots")
    axes = _axes(rows, config)

    plots = tuple(scaling_plot(rows, m, out / "plots" / f"scaling_{slug(m, 60)}.png", config) for m in axes["models"])
    used = {r["image"] for r in rows if r.get("image")}
    if embed is None:
        total = sum((results / u).stat().st_size for u in used if (results / u).is_file())
        embed = total <= EMBED_LIMIT_BYTES
    images = _Images(results, out, embed)
    plot_images = _Images(out, out, True)  # plots are small: always embedded

    config_text = json.dumps(config, indent=2) if config else ""
    name = str(config.get("name", "sweep")) if config else "sweep"

    body = [
        f"<h1>{_e(name)}: noise-search sweep</h1>",
        f"<p>{len(rows)} rows: {len({r['prompt'] for r in rows})} prompts × {len(axes['models'])} model(s) × "
        f"{len(axes['strategies'])} strateg{'y' if len(axes['strategies']) == 1 else 'ies'} × "
        f"{len(axes['search_verifiers'])} search verifier(s) × {len(axes['budgets'])} budget(s) × "
        f"{len({r['seed'] for r in rows})} seed(s). Scores: mean ± standard error over prompts (seeds averaged per prompt)."
        + ("" if final else " <b>Partial: the sweep has not finished; these are the rows written so far.</b>")
        + "</p>",
    ]
    for model, plot in zip(axes["models"], plots):
        body.append(f"<h2>{_e(model)}</h2>")
        body.append(
            f'<img class="plot" src="{_e(plot_images.src(os.path.relpath(plot, out)))}" alt="scaling plot for {_e(model)}">'
        )
        body.append("<h3>Summary</h3>" + _summary_table(rows, model, axes))
        if axes["categories"]:
            for metric in axes["evals"] or ["search_score"]:
                body.append(_category_table(rows, model, metric, axes))
        body.append("<h3>Images</h3>" + _image_grid(rows, model, axes, images, max_prompts))
    if config_text:
        body.append(f"<details><summary>Configuration</summary><pre>{_e(config_text)}</pre></details>")
    page = (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(name)}: sweep report</title>'
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return ReportFiles(html_path, plots, len(rows), final)
