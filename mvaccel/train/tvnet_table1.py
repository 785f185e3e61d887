"""TVNet's Table 1 (Fan et al. 2018): TVNet trained with EPE on Middlebury's ground truth.

``python -m mvaccel.train.tvnet_table1 recipes/tvnet_table1.yaml --root MIDDLEBURY/other-data
--gt-root MIDDLEBURY/other-gt-flow``: the recipe's TVNet, :func:`mvaccel.train.tvnet.
train_tvnet_epe` (full-batch gradient descent on the EPE), the average EPE before and after.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

from ..data.middlebury import middlebury_pairs
from ..nn.tvnet import TVNet
from .tvnet import train_tvnet_epe


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``recipes/tvnet_table1.yaml``: TVNet trained with EPE on Middlebury (Table 1).

    ``python -m mvaccel.train.tvnet_table1 recipes/tvnet_table1.yaml --root MIDDLEBURY [--gt-root
    GT]`` prints the average EPE before and after training and saves TVNet's weights.
    """
    ap = argparse.ArgumentParser(prog="python -m mvaccel.train.tvnet_table1",
                                 description=main.__doc__)  # fmt: skip
    ap.add_argument("config", help="recipes/tvnet_table1.yaml")
    ap.add_argument("--root", help="Middlebury frames (other-data); default: the recipe's")
    ap.add_argument(
        "--gt-root",
        dest="gt_root",
        help="ground truth (other-gt-flow); default: --root, or the recipe's",
    )
    ap.add_argument("--steps", type=int, help="override the recipe's steps")
    ap.add_argument("--out", help="where to save TVNet's state dict")
    a = ap.parse_args(argv)
    try:
        return _run(a)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _run(a: argparse.Namespace) -> int:
    path = Path(a.config)
    if not path.is_file():
        raise FileNotFoundError(f"recipe not found: {path}")
    cfg = yaml.safe_load(path.read_text())
    data, tv, fit = cfg["data"], cfg["tvnet"], cfg["fit"]
    torch.manual_seed(int(cfg.get("seed", 0)))
    # --root alone: frames and ground truth in one folder; otherwise the recipe's two.
    gt_root = a.gt_root or (None if a.root else data.get("gt_root"))
    pairs = middlebury_pairs(a.root or data["root"], gt_root)
    net = TVNet(**tv)
    steps = a.steps if a.steps is not None else int(fit["steps"])
    history = train_tvnet_epe(net, pairs, steps, float(fit["lr"]), int(fit.get("log_every", 0)))
    for step, value in history:
        print(f"step {step}: average EPE {value:.3f} px over {len(pairs)} pairs")
    out = Path(a.out or fit.get("out", "runs/middlebury/tvnet_table1.pt"))
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
