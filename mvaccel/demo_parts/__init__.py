"""The second table of ``make demo``: every method of the papers on the same synthetic data.

Each method has a module here with one function, ``run(ctx: DemoContext) -> list[MethodResult]``,
that trains the method on ``ctx.root`` (the prepared synthetic data of the first table: H.264
videos, TV-L1 flow, UCF101 lists), evaluates it on the test list, measures its end-to-end
frames/s per stage on one thread, and returns one row per variant (e.g. a stream and its
fusion). :data:`PARTS` lists the modules in table order; :func:`mvaccel.demo.pipeline` runs them
after the first table and prints the rows side by side. Each part keeps to about two minutes on
one CPU core.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: modules of this package, in the order of the table's rows
PARTS: tuple[str, ...] = ("dmcnet", "off", "tvnet", "dual_action")


@dataclass
class DemoContext:
    """What the first table leaves for the methods.

    Attributes:
        cfg: the demo's :class:`mvaccel.demo.DemoConfig` (sizes, epochs, seed, bound...).
        root: the prepared data folder (``videos/``, ``flow/``, ``lists/``).
        runs: where a part writes its training runs (``runs/<part>/...``).
        scores: where a part writes its per-video score files (``<name>.npz``).
        checkpoints: checkpoints of the first table by stream name (``teacher_flow``,
            ``rgb_cnn``, ``mv_cnn_scratch``, ``mv_cnn_st_ti_dc``).
        results: their :func:`mvaccel.train.evaluate.evaluate` results by stream name.
        motion_fps: frames/s of reading motion vectors (``"mv"``) and of TV-L1 (``"flow"``).
    """

    cfg: Any
    root: Path
    runs: Path
    scores: Path
    checkpoints: dict[str, Path] = field(default_factory=dict)
    results: dict[str, dict] = field(default_factory=dict)
    motion_fps: dict[str, float] = field(default_factory=dict)


@dataclass
class MethodResult:
    """One row of the second table.

    Attributes:
        name: the method as the papers call it (``"DMC-Net (+ I + R, 2:1:1:1)"``).
        inputs: what it reads at test time (``"mv + residual"``, ``"rgb"``...).
        top1 / mean_class: video-level accuracies in [0, 1].
        stage_fps: frames/s of each stage measured on one thread (``decode``, ``motion``,
            ``network``...): a video's frames divided by the stage's time.
        train_s: training time of the row's own networks in seconds (0 for a fusion).
        note: anything a reader must know to read the row (``"fusion of the rows above"``).
    """

    name: str
    inputs: str
    top1: float
    mean_class: float
    stage_fps: dict[str, float]
    train_s: float = 0.0
    note: str = ""

    @property
    def total_fps(self) -> float:
        """End-to-end frames/s: the stages one after the other."""
        rates = [v for v in self.stage_fps.values() if v > 0]
        return 1 / sum(1 / v for v in rates) if rates else float("nan")


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[Any, float]:
    """``fn()``'s result and its best wall time in seconds over ``repeat`` calls."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def fit(ctx: DemoContext, part: str, name: str, build, dm, epochs: int) -> tuple[Path, float]:
    """Train the model ``build()`` makes on ``dm`` for ``epochs``; its checkpoint and seconds.

    On the CPU, the demo's way: seeded before the model is built (torch's default seed
    differs per process, so weights made before seeding differ between runs), no validation,
    a CSV log under ``ctx.runs/part/name``.
    """
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    L.seed_everything(ctx.cfg.seed, verbose=False)
    model = build()
    runs = ctx.runs / part
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=CSVLogger(runs, name, ""),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, log_every_n_steps=5,
    )  # fmt: skip
    t0 = time.perf_counter()
    trainer.fit(model, dm)
    took = time.perf_counter() - t0
    path = runs / name / "last.ckpt"
    trainer.save_checkpoint(path)
    print(f"trained {name:24s} {trainer.global_step:4d} steps in {took:5.1f} s -> {path}")
    return path, took
