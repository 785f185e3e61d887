"""TVNet trained with EPE on synthetic flow pairs (the paper's Table 1 effect, in small).

Random smooth textures warped by random smooth flows (``I1(x + u) = I0(x)`` exactly, bilinear);
train all of TVNet's parameters (per-iteration filters and u0) with Adam on EPE, report the EPE
on 16 held-out pairs before and after. Run:
``PYTHONPATH=$PWD python bench/tvnet_train.py --iters 50 --steps 300 --size 32``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python_tests"))
from test_nn_tvnet import _pair  # noqa: E402

from mvaccel.distill import epe  # noqa: E402
from mvaccel.nn import TVNet  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.03)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(6)
    net = TVNet(iterations=a.iters, size=(a.size, a.size))
    test = _pair(16, a.size, a.size, torch.Generator().manual_seed(7), dtype=torch.float32)

    def test_epe() -> float:
        with torch.no_grad():
            return epe(net(test[0], test[1]), test[2]).item()

    print(f"TVNet-{a.iters}, {a.size}x{a.size}, untrained EPE {test_epe():.3f}")
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    t0 = time.time()
    for i in range(a.steps):
        i0, i1, u = _pair(a.batch, a.size, a.size, gen, dtype=torch.float32)
        loss = epe(net(i0, i1), u)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (i + 1) % max(1, a.steps // 5) == 0:
            print(f"step {i + 1}: held-out EPE {test_epe():.3f} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
