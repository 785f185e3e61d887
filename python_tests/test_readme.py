"""The README's Python examples run as written.

Every ```python block of README.md is executed, each in a fresh namespace, in a folder that
holds the small videos the examples name (``v.mp4``, ``v_coviar.mp4``, ``in.avi``, ``v.avi``).
A block that needs real data or minutes says so with ``<!-- readme-test: skip REASON -->`` on
the line before it; such blocks are reported as skipped, never silently ignored.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import videogen as vg

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*(.*?)\s*-->\s*$")


def python_blocks() -> list:
    text = README.read_text()
    lines = text.splitlines()
    blocks = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        line = text[: m.start()].count("\n") + 1
        prev = next((ln for ln in reversed(lines[: line - 1]) if ln.strip()), "")
        skip = SKIP.search(prev)
        marks = [pytest.mark.skip(reason=skip.group(1) or "marked in the README")] if skip else []
        blocks.append(pytest.param(m.group(1), id=f"line{line}", marks=marks))
    return blocks


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("readme")
    vg.encode(vg.texture(48, 64, 24, 1.0, 0.5), d / "v.mp4", vg.X264_B)
    vg.encode(vg.texture(48, 64, 50, 1.0, 0.0, seed=1), d / "v_coviar.mp4", vg.MPEG4)
    vg.encode(vg.texture(48, 64, 6, 1.0, 0.0, seed=2), d / "in.avi", vg.MPEG4)
    vg.encode(vg.texture(48, 64, 4, 1.0, 0.0, seed=3), d / "v.avi", vg.MPEG4)
    return d


def test_readme_has_python_examples():
    assert len(python_blocks()) >= 4


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("code", python_blocks())
def test_readme_python_block_runs(code, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})  # noqa: S102
