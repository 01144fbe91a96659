"""The README is a front page whose links lead somewhere: every relative link of README.md and docs/*.md names a
file that exists (and a heading of it, for a #fragment), the README links every page of docs/, stays short, and
its Python quick start runs as written."""
import glob
import os
import re
import runpy
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
PAGES = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def outside_code(markdown):
    """The markdown without its fenced code blocks (links and headings there are code)."""
    return re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)


def anchors(markdown):
    """GitHub's fragment for each heading: lower case, punctuation but - and _ dropped, spaces as -."""
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", outside_code(markdown), flags=re.M):
        out.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return out


@pytest.mark.parametrize("page", [README] + PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_resolve(page):
    body = outside_code(text(page))
    targets = LINK.findall(body) + IMAGE.findall(body)
    assert targets or page != README
    for target in targets:
        if re.match(r"^[a-z]+:", target):           # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        file = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        assert os.path.exists(file), f"{os.path.relpath(page, ROOT)} links to {target}: no such file"
        if fragment and file.endswith(".md"):
            assert fragment in anchors(text(file)), \
                f"{os.path.relpath(page, ROOT)} links to {target}: no such heading in {os.path.relpath(file, ROOT)}"


def test_readme_is_a_front_page_linking_every_doc():
    readme = text(README)
    assert len(readme.splitlines()) < 200
    for page in PAGES:
        assert f"(docs/{os.path.basename(page)})" in readme, f"the README does not link {page}"
    setup = readme.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^make (\S+)", setup.split("```sh", 1)[1].split("```", 1)[0], flags=re.M)
    assert commands == ["demo", "test"]          # two commands that need nothing but python3, gcc and make


def test_readme_python_quick_start_runs(tmp_path, monkeypatch):
    """Every quick start (operators, models, the hmmlearn drop-in, the CRF), run as one script."""
    pytest.importorskip("sklearn")                    # GaussianHMM's k-means start, hmmop.hmmlearn
    blocks = re.findall(r"^```python\n(.*?)^```", text(README), flags=re.S | re.M)
    script = tmp_path / "quick_start.py"
    script.write_text("\n".join(blocks), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script)])
    namespace = runpy.run_path(str(script))
    assert namespace["ll"].shape == (2,)
    assert namespace["history"].shape == (300,) and namespace["g"].n_features == 2
    assert namespace["model"].transmat_.shape == (3, 3)             # the drop-in's
    assert namespace["nll"].shape == (2,) and [len(p) for p in namespace["paths"]] == [5, 3]
    assert (tmp_path / "model.npz").exists()
