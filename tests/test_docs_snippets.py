"""Documentation that runs (docs/CONTRIBUTING.md, "Documentation that runs"): every fenced block of
README.md and docs/*.md whose info string carries the word ``test`` is run, each alone in a new
temporary folder, and every relative link and #anchor between the pages resolves."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))
                               if f.endswith(".md"))
# What a snippet sees of the checkout, linked into its temporary folder.
LINKED = ("configs", "tools", "datasets", "train_net.py")
RUNNERS = {"python": [sys.executable], "bash": ["bash", "-e", "-o", "pipefail"]}
SUFFIX = {"python": ".py", "bash": ".sh"}
# A snippet may take a while on a loaded 2-core machine; a hung one must not hang the suite.
TIMEOUT_S = 300
# A fence opens with 3+ backticks or tildes indented by at most 3 spaces (4 make an indented code block).
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")


def fenced_blocks(text):
    """Every fenced block of a Markdown text.

    Returns:
        list[tuple[int, list[str], str]]: the line of the opening fence (1-based), the words of its
        info string (language first) and the block's text.
    """
    blocks, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info, start, body = m.group(1), m.group(2).split(), i + 1, []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(fence[0] * len(fence))
                                      and set(lines[i].strip()) == {fence[0]}):
            body.append(lines[i])
            i += 1
        blocks.append((start, info, "\n".join(body) + "\n"))
        i += 1  # the closing fence
    return blocks


def marked_snippets():
    """(page, line, language, code) of every block marked ``test``."""
    found = []
    for page in PAGES:
        with open(os.path.join(ROOT, page)) as f:
            for line, info, code in fenced_blocks(f.read()):
                if len(info) > 1 and "test" in info[1:]:
                    found.append((page, line, info[0], code))
    return found


SNIPPETS = marked_snippets()


def _needs_yolo_extra(code):
    return re.search(r"\b(wnlb_d2\.yolo|ultralytics)\b", code) is not None


@pytest.mark.parametrize("page, line, language, code", SNIPPETS, ids=[f"{p}:{n}" for p, n, _, _ in SNIPPETS])
def test_marked_snippet_runs(page, line, language, code, tmp_path):
    assert language in RUNNERS, f"{page}:{line}: a block marked test must be one of {sorted(RUNNERS)}, not {language!r}"
    if _needs_yolo_extra(code) and importlib.util.find_spec("ultralytics") is None:
        pytest.skip("the optional YOLO extra (ultralytics) is not installed")
    for name in LINKED:
        os.symlink(os.path.join(ROOT, name), tmp_path / name)
    script = tmp_path / f"snippet{SUFFIX[language]}"
    script.write_text(code)
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(DETECTRON2_DATASETS=str(tmp_path / "d2_datasets"), WNLB_DEMO_DIR=str(tmp_path / "demo"),
               MPLBACKEND="Agg")
    result = subprocess.run(RUNNERS[language] + [script.name], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=TIMEOUT_S)
    output = (result.stdout + result.stderr)[-4000:]
    assert result.returncode == 0, f"{page}:{line} ({language} block) exited with {result.returncode}:\n{output}"


def test_the_quick_starts_are_marked():
    # The marker cannot silently drop off the snippets a newcomer runs first.
    readme = [code for page, _, _, code in SNIPPETS if page == "README.md"]
    assert any("LowLightPredictor" in c and "build_resnet_wnlb_fpn_backbone" in c for c in readme)
    assert any("yolov8n-seg-wnlb.yaml" in c and "bus.jpg" in c for c in readme)
    assert any(page == os.path.join("docs", "configuration.md") for page, _, _, _ in SNIPPETS)
    assert {language for _, _, language, _ in SNIPPETS} == set(RUNNERS)


def test_fenced_blocks_parser():
    text = "a\n```python test\nx = 1\n```\n    ```bash test\n    indented: not a fence\n    ```\n~~~bash\nls\n~~~\n"
    assert fenced_blocks(text) == [(2, ["python", "test"], "x = 1\n"), (8, ["bash"], "ls\n")]


def github_anchor(heading):
    """The #anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors_of(text):
    seen, anchors = {}, set()
    for line in _without_fenced_blocks(text).split("\n"):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = github_anchor(m.group(1))
            n = seen.get(base, 0)
            anchors.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
    return anchors


def _without_fenced_blocks(text):
    lines = text.split("\n")
    for start, _, code in fenced_blocks(text):
        for k in range(start - 1, start + code.count("\n") + 1):
            if k < len(lines):
                lines[k] = ""
    return "\n".join(lines)


def _without_code(text):
    """The text with fenced blocks and inline code spans blanked (links there are not links)."""
    return re.sub(r"`[^`\n]*`", "", _without_fenced_blocks(text))


def _links(page):
    with open(os.path.join(ROOT, page)) as f:
        text = f.read()
    for m in re.finditer(r"!?\[[^\]]*\]\(([^)\s]+)\)", _without_code(text)):
        target = m.group(1)
        if not re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            yield target


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_and_anchors_resolve(page):
    broken = []
    for target in _links(page):
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)) if path else os.path.join(ROOT, page)
        if not os.path.exists(resolved):
            broken.append(f"{target}: no such file")
        elif anchor and resolved.endswith(".md"):
            with open(resolved) as f:
                if anchor not in anchors_of(f.read()):
                    broken.append(f"{target}: no heading with anchor #{anchor}")
    assert broken == [], f"{page}: " + "; ".join(broken)
