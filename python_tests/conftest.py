"""Shared fixtures: devices, dtypes, the shared real data, and the CUDA marker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from mvaccel._ext import cuda_ops_ready

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MVACCEL_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    if cuda_ops_ready():
        return
    skip = pytest.mark.skip(reason="needs a CUDA build of mvaccel and a GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture
def shared_data() -> Path:
    """../shared/data of the development checkout; tests that need it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """Run the test on one torch thread: tiny tensors and many small ops only contend for the
    cores (on a loaded 2-core machine OpenMP's waits made such tests 10-20x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
