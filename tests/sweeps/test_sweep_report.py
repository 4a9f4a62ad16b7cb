"""Sweep reports: aggregation (mean ± s.e. over prompts), scaling plots, the HTML page, and its
rendering in headless Chromium (images decoded, none broken)."""

from __future__ import annotations

import base64
import hashlib
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from noisesearch.sweeps.report import aggregate, write_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
#: appended to a copy of the page: after load, counts the images and those that decoded
IMAGE_CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter((i) => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0).length;
  const d = document.createElement("div");
  d.id = "img-check"; d.dataset.total = imgs.length; d.dataset.ok = ok;
  document.body.appendChild(d);
});
</script>"""


def test_aggregate_averages_seeds_first_then_prompts() -> None:
    st = aggregate([("a", 1.0), ("a", 3.0), ("b", 4.0), ("c", None), ("c", float("nan"))])
    assert st is not None and st.n == 2 and st.mean == 3.0  # a -> 2, b -> 4
    assert st.se == pytest.approx(math.sqrt(((2 - 3) ** 2 + (4 - 3) ** 2) / 1 / 2))
    assert aggregate([("a", 0.5)]).se == 0.0 and aggregate([("a", None)]) is None


def report_copy(reference: tuple, tmp_path: Path) -> Path:
    out = tmp_path / "sweep"
    shutil.copytree(reference[1], out)
    return out


def test_report_writes_plot_and_self_contained_html(reference, tmp_path: Path) -> None:
    _, _, rows = reference
    out = report_copy(reference, tmp_path)
    files = write_report(out)
    assert files.final and files.rows == len(rows) and len(files.plots) == 1
    plot = np.asarray(Image.open(files.plots[0]).convert("RGB"))
    assert plot.shape[1] > 400 and plot.std() > 10  # a drawn figure, not a blank canvas
    page = files.html.read_text()
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) == 1 + len(rows)  # the plot and one best image per row (one seed)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    embedded = {hashlib.sha256(base64.b64decode(s.split(",", 1)[1])).hexdigest() for s in sources[1:]}
    assert embedded == {Path(r["image"]).stem for r in rows}  # exactly the rows' best images
    for needle in ("random-r1", "test-contrast", "search score", "± "):
        assert needle in page


def test_linked_report_uses_paths_that_exist(reference, tmp_path: Path) -> None:
    out = report_copy(reference, tmp_path)
    files = write_report(out, tmp_path / "elsewhere", embed=False)
    sources = re.findall(r'<img [^>]*src="([^"]+)"', files.html.read_text())
    linked = [s for s in sources if not s.startswith("data:")]
    assert len(linked) == len(reference[2]) and all((files.html.parent / s).is_file() for s in linked)


def test_report_of_an_unfinished_sweep_says_so(reference, tmp_path: Path) -> None:
    out = report_copy(reference, tmp_path)
    (out / "results.jsonl").unlink()
    files = write_report(out)
    assert not files.final and "Partial: the sweep has not finished" in files.html.read_text()


def chromium_or_skip() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    if os.environ.get("NOISESEARCH_CHROMIUM_TESTS") == "1":
        pytest.fail("NOISESEARCH_CHROMIUM_TESTS=1 but /usr/bin/chromium is missing; run .ci/install-chromium.sh")
    pytest.skip("headless Chromium not installed (.ci/install-chromium.sh; NOISESEARCH_CHROMIUM_TESTS=1 to require it)")


@pytest.mark.parametrize("embed", [True, False], ids=["embedded", "linked"])
def test_html_renders_in_headless_chromium(reference, tmp_path: Path, embed: bool) -> None:
    chromium = chromium_or_skip()
    out = report_copy(reference, tmp_path)
    files = write_report(out, embed=embed)
    check = files.html.with_name("check.html")  # beside the report, so linked images resolve alike
    check.write_text(files.html.read_text().replace("</body>", IMAGE_CHECK + "</body>"))
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run(
        [str(chromium), *flags, "--dump-dom", check.as_uri()], capture_output=True, text=True, timeout=240
    )
    found = re.search(r'id="img-check" data-total="(\d+)" data-ok="(\d+)"', dom.stdout)
    assert found, f"the page did not finish loading in Chromium:\n{dom.stderr[-2000:]}"
    total, ok = map(int, found.groups())
    assert total == 1 + len(reference[2]) and ok == total, (total, ok)
    if embed:  # one screenshot: the page paints, with the plot's colours in it
        shot = tmp_path / "shot.png"
        subprocess.run(
            [str(chromium), *flags, "--window-size=1280,1600", f"--screenshot={shot}", files.html.as_uri()],
            capture_output=True,
            timeout=240,
        )
        pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
        assert pixels.std() > 10 and (np.abs(pixels[:, 0] - pixels[:, 2]) > 60).mean() > 0.0002
