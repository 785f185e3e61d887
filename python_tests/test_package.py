"""The package around the ops: version, CLI, build facts, the missing-extension error, demo."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import mvaccel
from mvaccel.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"mvaccel {mvaccel.__version__}"


def test_info_reports_build_and_ops(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for key in ("torch", "built with CUDA kernels", "ops (CPU)", "FFmpeg reader"):
        assert key in out
    assert "block_upsample" in out.split("ops (CPU)")[1].splitlines()[0]


def test_console_script_runs():
    p = subprocess.run(
        [sys.executable, "-m", "mvaccel", "--version"], capture_output=True, text=True
    )
    assert p.returncode == 0 and mvaccel.__version__ in p.stdout


def test_missing_extension_names_the_build_command():
    # Hide mvaccel._C as a fresh checkout without a build would.
    code = textwrap.dedent(
        """
        import importlib.abc, sys
        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "mvaccel._C":
                    raise ImportError("No module named 'mvaccel._C'")
        sys.meta_path.insert(0, Hide())
        import mvaccel
        print(mvaccel.__version__)
        try:
            import mvaccel.ops
        except ImportError as e:
            print("ERR", e)
        """
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert mvaccel.__version__ in p.stdout
    assert "ERR" in p.stdout and "pip install -e . --no-build-isolation" in p.stdout


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="no_such_thing"):
        mvaccel.no_such_thing  # noqa: B018


def test_demo_writes_pngs(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--quick"]) == 0
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["mv_block_to_pixels.png"]
    img = np.asarray(Image.open(tmp_path / "mv_block_to_pixels.png").convert("RGB"))
    assert img.shape[0] >= 400 and img.shape[1] >= 1200  # readable, not a 128x96 thumbnail
    assert img.std() > 10  # coloured fields, not a blank image
