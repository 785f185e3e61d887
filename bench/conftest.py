"""Shared bench fixtures: devices (CUDA only where the build and machine have it), sync."""

from __future__ import annotations

import pytest
import torch

from mvaccel._ext import cuda_ops_ready

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def pytest_collection_modifyitems(config, items):
    if cuda_ops_ready():
        return
    skip = pytest.mark.skip(reason="needs a CUDA build of mvaccel and a GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


def timed(fn, device: str):
    """Wrap ``fn`` so a timed call includes the GPU work (synchronize inside the callable)."""
    if device != "cuda":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run
