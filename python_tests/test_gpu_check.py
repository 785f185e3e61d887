"""bench/gpu_check.sh's own logic, on CPU: one process per test file, a segfault reported as a
crash while the other files still run, failures counted, the summary table written, and a
non-zero exit status. (Its CUDA steps need a GPU machine; here they are switched off.)"""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The script runs `pytest -m cuda` on each file: the cases carry the marker.
FILES = {
    "test_gc_crash.py": "import os, signal\nimport pytest\n\n\n@pytest.mark.cuda\n"
    "def test_crash():\n    os.kill(os.getpid(), signal.SIGSEGV)\n",
    "test_gc_ok.py": "import pytest\n\n\n@pytest.mark.cuda\ndef test_ok():\n    pass\n\n\n"
    "@pytest.mark.cuda\ndef test_skip():\n    pytest.skip('no GPU')\n",
    "test_gc_fail.py": "import pytest\n\n\n@pytest.mark.cuda\ndef test_fail():\n"
    "    assert 1 == 2\n",
}


def test_script_syntax():
    subprocess.run(["bash", "-n", str(REPO / "bench" / "gpu_check.sh")], check=True)


def test_crash_is_reported_and_the_rest_still_runs(tmp_path):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    out = tmp_path / "out"
    env = dict(
        os.environ,
        GPU_CHECK_BUILD="0",
        GPU_CHECK_SANITIZER="0",
        GPU_CHECK_BENCH="0",
        GPU_CHECK_NVRTC="0",
        GPU_CHECK_INFO="0",
        GPU_CHECK_TESTS=" ".join(str(tmp_path / n) for n in FILES),  # the crash first
        PYTHONPATH=str(REPO),
    )
    p = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode != 0, p.stdout
    rows = {
        Path(r[0]).name: r
        for r in (line.split("\t") for line in (out / "summary.tsv").read_text().splitlines())
    }
    crash, ok, fail = rows["test_gc_crash.py"], rows["test_gc_ok.py"], rows["test_gc_fail.py"]
    # file, step, passed, failed, skipped, crashed, seconds, note
    assert crash[5] == "1" and "signal 11" in crash[7]
    assert ok[2:6] == ["1", "0", "1", "0"] and ok[7] == "ok"
    assert fail[2:6] == ["0", "1", "0", "0"]
    table = (out / "summary.md").read_text()
    assert table.startswith("| file | step | passed | failed | skipped | crashed | seconds |")
    assert "| **total** | | 1 | 1 | 1 | 1 |" in table
    # Few files come back from a device machine: the per-step logs are one archive.
    with tarfile.open(out / "logs.tar.gz") as tar:
        assert "steps/test_test_gc_crash.log" in tar.getnames()
