"""The built-in demo (``make demo`` / ``mvaccel demo``): Zhang et al.'s pipeline on synthetic data.

1. The block-grid to pixel path of every compressed-domain model: a motion field on a codec's
   8x8 grid spread to pixels (codec-exact and smoothed), resized with its values rescaled.
2. Synthetic action videos whose class is the motion (:mod:`mvaccel.data.synthetic`), prepared
   like UCF101 with ``mvaccel prepare ucf101``: re-encoded to a low-bitrate H.264 stream (CRF 40:
   noisy vectors, as in web video), TV-L1 teacher flow of the decoded frames (``fast`` preset,
   ``tvl1(I_t, I_{t-1})``: the vectors' direction), split lists.
3. Training on Lightning: the flow CNN (teacher), an RGB CNN, the MV-CNN from scratch and the
   DTMV-CNN (ST+TI+DC); ``all_strategies`` adds TI, ST, ST+TI and TI+DC. A ClarifaiNet at 1/8
   width on 64x64 crops of 5 stacked fields, so that it all runs in minutes on one CPU core.
4. Video-level evaluation (25 segments, centre crop), two-stream fusion (RGB 1 : temporal 2),
   frames/s of motion extraction and of the CNN, and figures (:mod:`mvaccel.viz`): frame vs
   motion vectors vs TV-L1 for a few test videos, the DTMV-CNN's confusion matrix, accuracy vs
   frames/s of every method; ``report.md`` holds the tables and links the figures.
5. The second table: every other method of the papers trained and evaluated on the same data
   (:mod:`mvaccel.demo_parts`: DMC-Net and the CoViAR streams, OFF, TVNet end to end,
   two-stream, Dual-action Stream), accuracy and end-to-end frames/s per stage side by side.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

DC_LAYERS = ("conv3", "conv4", "conv5", "fc6", "fc7")
#: name -> (modality, MotionVectorTransfer strategy or None for a plain classifier)
STREAMS = {
    "teacher_flow": ("flow", None),
    "rgb_cnn": ("rgb", None),
    "mv_cnn_scratch": ("mv", None),
    "mv_cnn_ti": ("mv", dict(teacher_init=True, temperature=0.0, connect=())),
    "mv_cnn_st": ("mv", dict(teacher_init=False, temperature=2.0, connect=())),
    "mv_cnn_st_ti": ("mv", dict(teacher_init=True, temperature=2.0, connect=())),
    "mv_cnn_ti_dc": ("mv", dict(teacher_init=True, temperature=0.0, connect=DC_LAYERS)),
    "mv_cnn_st_ti_dc": ("mv", dict(teacher_init=True, temperature=2.0, connect=DC_LAYERS)),
}
#: training time of the first table's streams in the last run, by stream name
TRAIN_SECONDS: dict[str, float] = {}
LABELS = {
    "teacher_flow": "OF-CNN (teacher, TV-L1)",
    "rgb_cnn": "RGB CNN",
    "mv_cnn_scratch": "MV-CNN from scratch",
    "mv_cnn_ti": "EMV-CNN TI",
    "mv_cnn_st": "EMV-CNN ST",
    "mv_cnn_st_ti": "EMV-CNN ST+TI",
    "mv_cnn_ti_dc": "DTMV-CNN TI+DC",
    "mv_cnn_st_ti_dc": "DTMV-CNN ST+TI+DC",
}


@dataclass
class DemoConfig:
    """The demo's scale: small enough for minutes on one core of a shared 2-core machine.

    The hyper-parameters keep the paper's structure (Temp 2, w = 4, DC on conv3 ... fc7,
    transfer students at a tenth of the scratch learning rate) at a toy scale: Adam instead of
    SGD (the tiny network does not train with SGD in this budget), 60 epochs of 36 videos
    (4 per class: few videos, the regime of HMDB51, where the paper's gain is largest; with 8
    per class both the scratch and the transfer students reach 100 % and show nothing).
    No flips: a mirrored MoveRight is a MoveLeft, a mirrored RotateCW a RotateCCW (real actions
    keep their label under a flip; these synthetic classes do not).
    """

    seed: int = 0
    train_per_class: int = 4
    test_per_class: int = 15
    frames: int = 24
    height: int = 96
    width: int = 128
    crf: int = 40
    flow_preset: str = "fast"
    bound: float = 5.0
    new_length: int = 5
    size: int = 64
    width_mult: float = 0.125
    dropout: tuple[float, float] = (0.5, 0.5)
    motion_std: float = 0.05
    epochs: int = 60
    rgb_epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    transfer_lr: float = 1e-4
    test_segments: int = 25
    streams: tuple[str, ...] = ("teacher_flow", "rgb_cnn", "mv_cnn_scratch", "mv_cnn_st_ti_dc")
    classes: tuple[str, ...] | None = None  # None: all nine motion classes
    methods: tuple[str, ...] | None = None  # parts of the second table (None: all of PARTS)


def synthetic_block_field(hb: int, wb: int, block: int) -> torch.Tensor:
    """A rotation plus a translation on a block grid: ``(1, 2, hb, wb)`` vectors in pixels."""
    ys = (torch.arange(hb, dtype=torch.float32) + 0.5) * block
    xs = (torch.arange(wb, dtype=torch.float32) + 0.5) * block
    y, x = torch.meshgrid(ys - ys.mean(), xs - xs.mean(), indexing="ij")
    angle = math.radians(3.0)
    dx = (math.cos(angle) - 1) * x - math.sin(angle) * y + 2.0
    dy = math.sin(angle) * x + (math.cos(angle) - 1) * y - 1.0
    return torch.stack([dx, dy])[None]


def ops_step(out: Path) -> dict[str, Path]:
    """Step 1: block grid -> pixels -> network size, as one keyed figure."""
    from . import ops
    from .viz import Panel, motion_figure, save_figure

    h, w, block = 256, 340, 8  # CoViAR's frame size, H.264's 8x8 vector grid
    field = synthetic_block_field(math.ceil(h / block), math.ceil(w / block), block)
    t0 = time.perf_counter()
    dense = ops.block_upsample(field, block, (h, w), "nearest")
    smooth = ops.block_upsample(field, block, (h, w), "bilinear")
    net_in = ops.mv_resize(smooth, (224, 224))
    ms = (time.perf_counter() - t0) * 1e3
    top = max(float(dense.norm(dim=1).max()), 1e-6)
    fig = motion_figure(
        [
            Panel(f"block_upsample nearest\n{w}x{h} px from {block}x{block} blocks", dense[0]),
            Panel(f"block_upsample bilinear\n{w}x{h} px, smoothed", smooth[0]),
            Panel("mv_resize to 224x224\nx scaled by 224/340, y by 224/256", net_in[0]),
        ],
        top,
        title="a codec's block motion field (3 deg rotation + translation) to a network's input",
        intra_legend=False,
    )
    paths = {"ops": save_figure(fig, out / "mv_block_to_pixels.png")}
    print(f"block field {tuple(field.shape)} -> pixels {tuple(dense.shape)} ({ms:.2f} ms, 3 ops)")
    before, after = float(smooth[0, 0].abs().max()), float(net_in[0, 0].abs().max())
    print(
        f"mv_resize {w}x{h} -> 224x224 scales x by {224 / w:.3f} and y by {224 / h:.3f}: "
        f"max |dx| {before:.2f} -> {after:.2f} px"
    )
    for name, p in paths.items():
        print(f"wrote {name:8s} {p}")
    return paths


def _prepare(cfg: DemoConfig, out: Path) -> Path:
    """Step 2: synthetic videos, then ``mvaccel prepare ucf101`` (re-encode, flow, lists)."""
    from .cli import main as cli_main
    from .data.synthetic import SyntheticSpec, write_synthetic_dataset

    spec = SyntheticSpec(
        train_per_class=cfg.train_per_class, test_per_class=cfg.test_per_class,
        frames=cfg.frames, height=cfg.height, width=cfg.width, seed=cfg.seed,
        **({"classes": tuple(cfg.classes)} if cfg.classes else {}),
    )  # fmt: skip
    t0 = time.perf_counter()
    src = write_synthetic_dataset(out / "synthetic", spec)
    n = len(spec.classes) * (spec.train_per_class + spec.test_per_class)
    took = time.perf_counter() - t0
    print(
        f"{n} synthetic videos ({len(spec.classes)} motion classes, {spec.frames} frames, "
        f"{spec.width}x{spec.height}, MPEG-4) in {took:.1f} s -> {src}"
    )
    root = out / "prepared"
    args = ["prepare", "ucf101", str(src), str(root), "--reencode", "h264",
            "--crf", str(cfg.crf), "--size", f"{cfg.width}x{cfg.height}", "--workers", "2",
            "--flow-preset", cfg.flow_preset, "--flow-bound", str(cfg.bound)]  # fmt: skip
    print("$ mvaccel " + " ".join(args))
    t0 = time.perf_counter()
    if cli_main(args) != 0:
        raise RuntimeError("mvaccel prepare failed")
    print(f"prepared in {time.perf_counter() - t0:.1f} s")
    return root


def _datamodule(cfg: DemoConfig, root: Path, modalities, val_modalities=None):
    from .train.data import VideoDataModule

    rgb = modalities[0] == "rgb"
    return VideoDataModule(
        root=str(root), modalities=list(modalities), val_modalities=val_modalities,
        new_length=1 if rgb else cfg.new_length, num_segments=1, size=cfg.size,
        bound=cfg.bound, flow_bound=cfg.bound, motion_std=cfg.motion_std,
        batch_size=cfg.batch_size, num_workers=0, cache=True, seed=cfg.seed, flip=False,
        val_segments=cfg.test_segments,
    )  # fmt: skip


def _train(cfg: DemoConfig, root: Path, name: str, runs: Path, teacher: Path | None) -> Path:
    """Train one stream; returns its checkpoint."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from .train import ActionClassifier, MotionVectorTransfer

    modality, strategy = STREAMS[name]
    rgb = modality == "rgb"
    if strategy is None:
        dm = _datamodule(cfg, root, [modality])
    else:
        dm = _datamodule(cfg, root, ["mv", "flow"], ["mv"])
    common = dict(
        backbone="clarifai", num_classes=dm.num_classes,
        in_channels=3 if rgb else 2 * cfg.new_length,
        backbone_kwargs=dict(width=cfg.width_mult, dropout=tuple(cfg.dropout), prelu=not rgb),
        optimizer="adam", weight_decay=5e-4, step_seed=cfg.seed,
    )  # fmt: skip
    # Seeded before the weights are made: torch's default seed differs per process.
    L.seed_everything(cfg.seed, verbose=False)
    if strategy is None:
        model = ActionClassifier(lr=cfg.lr, **common)
    else:
        model = MotionVectorTransfer(teacher_checkpoint=str(teacher), lr=cfg.transfer_lr,
                                     **strategy, **common)  # fmt: skip
    loggers = [CSVLogger(runs, name=name, version=""), TensorBoardLogger(runs, name=name,
                                                                         version="")]  # fmt: skip
    trainer = L.Trainer(
        max_epochs=cfg.rgb_epochs if rgb else cfg.epochs, accelerator="cpu", devices=1,
        logger=loggers, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        log_every_n_steps=5,
    )  # fmt: skip
    t0 = time.perf_counter()
    trainer.fit(model, dm)
    TRAIN_SECONDS[name] = time.perf_counter() - t0
    path = runs / name / "last.ckpt"
    trainer.save_checkpoint(path)
    print(f"trained {LABELS[name]:24s} {trainer.global_step:5d} steps in "
          f"{time.perf_counter() - t0:6.1f} s -> {path}")  # fmt: skip
    return path


def _motion_fps(cfg: DemoConfig, root: Path) -> dict[str, float]:
    """Frames/s of motion-vector reading and of TV-L1 (the preset of the teacher's flow)."""
    from .data.lists import ucf101_split
    from .flow import flow_video
    from .video import read_motion

    items = ucf101_split(root / "lists", 1, "test")[:: max(1, cfg.test_per_class // 2)]
    paths = [root / "videos" / it.path for it in items]
    t0 = time.perf_counter()
    frames = sum(len(read_motion(p)) for p in paths)
    mv = frames / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    pairs = sum(flow_video(p, cfg.flow_preset, backward=True).shape[0] for p in paths[:6])
    flow = pairs / (time.perf_counter() - t0)
    return {"mv": mv, "flow": flow}


def _confusion_png(cm: np.ndarray, classes: list[str], path: Path, title: str = "") -> Path:
    from .viz import confusion_figure, save_figure

    return save_figure(confusion_figure(cm, classes, title), path)


def _field_pngs(cfg: DemoConfig, root: Path, out: Path, count: int = 3,
                dmc: Path | None = None) -> dict[str, Path]:  # fmt: skip
    """Frame vs motion vectors vs TV-L1 (:func:`mvaccel.viz.compare_frame`) for a few test videos.

    One video of each of ``count`` classes spread over the test list, at the P-frame with the
    most motion; TV-L1 with the demo's preset, in the vectors' direction; with ``dmc`` (a
    DMC-Net checkpoint) also its generator's flow.
    """
    from .data.lists import ucf101_split
    from .viz import compare_frame, save_figure

    items = ucf101_split(root / "lists", 1, "test")
    seen: dict[int, object] = {}
    for it in items:
        seen.setdefault(it.label, it)
    firsts = [seen[k] for k in sorted(seen)]
    # Classes spread over the list (translation, rotation, ...), not the first few.
    spread = np.linspace(0, len(firsts) - 1, min(count, len(firsts)))
    pick = sorted({round(float(i)) for i in spread})
    paths = {}
    for i, item in enumerate(firsts[j] for j in pick):
        fig, info = compare_frame(root / "videos" / item.path, preset=cfg.flow_preset, dmc=dmc)
        name = Path(item.path).stem
        paths[f"motion_{i}"] = save_figure(fig, out / f"motion_{name}.png")
    return paths


def accuracy_fps_png(rows, path: Path) -> Path:
    """Every method's top-1 against its end-to-end frames/s on one labelled plot."""
    from .viz import accuracy_fps_figure, save_figure

    points = [(r.name, r.top1, r.total_fps) for r in rows]
    title = "every method on the demo's test videos (one CPU thread)"
    return save_figure(accuracy_fps_figure(points, title), path)


def write_report(out: Path, sections: list[tuple[str, str]], figures: dict[str, Path],
                 intro: str = "") -> Path:  # fmt: skip
    """``out/report.md``: the demo's tables and its figures (linked relative to ``out``).

    Args:
        out: the demo's folder (the figures must be inside it).
        sections: ``(heading, markdown text)`` pairs, e.g. the tables.
        figures: caption -> PNG path.
        intro: a paragraph under the title.

    Returns:
        The report's path (written atomically).
    """
    lines = ["# mvaccel demo report", ""]
    if intro:
        lines += [intro, ""]
    for heading, text in sections:
        lines += [f"## {heading}", "", text.strip(), ""]
    if figures:
        lines += ["## Figures", ""]
        for caption, path in figures.items():
            rel = Path(path).resolve().relative_to(out.resolve()).as_posix()
            lines += [f"### {caption}", "", f"![{caption}]({rel})", ""]
    path = out / "report.md"
    from ._io import atomic_write_text

    atomic_write_text(path, "\n".join(lines))
    return path


def pipeline(cfg: DemoConfig, out: Path) -> dict:
    """Steps 2-4; returns the results (also written to ``out/results.json``)."""
    from .train.evaluate import (
        confusion_matrix,
        format_table,
        fuse,
        fusion_table,
        mean_class_accuracy,
        save_scores,
    )

    root = _prepare(cfg, out)
    runs, scores_dir = out / "runs", out / "scores"
    ckpts: dict[str, Path] = {}
    order = ["teacher_flow"] + [s for s in cfg.streams if s != "teacher_flow"]
    for name in order:
        ckpts[name] = _train(cfg, root, name, runs, ckpts.get("teacher_flow"))
    from .train.evaluate import evaluate

    results = {}
    for name in order:
        r = evaluate(ckpts[name], segments=cfg.test_segments, crops=1, progress=False)
        save_scores(scores_dir / f"{name}.npz", r)
        results[name] = r
    fps = _motion_fps(cfg, root)
    rgb = results.get("rgb_cnn")
    table = [
        "| stream | input | top-1 % | mean class % | + RGB (1 : 2) % | motion fps | CNN fps "
        "| total fps |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    summary = {}
    for name in order:
        r = results[name]
        modality = STREAMS[name][0]
        fused = ""
        if rgb is not None and name != "rgb_cnn":
            f = fuse([rgb, r], [1, 2])
            fused = f"{100 * float((f['scores'].argmax(1) == f['labels']).mean()):.1f}"
        motion = fps.get(modality)
        total = 1 / (1 / motion + 1 / r["frames_per_s"]) if motion else r["frames_per_s"]
        m = f"{motion:.0f}" if motion else "-"
        table.append(
            f"| {LABELS[name]} | {modality} | {100 * r['top1']:.1f} | "
            f"{100 * r['mean_class']:.1f} | {fused or '-'} | {m} | {r['frames_per_s']:.0f} | "
            f"{total:.0f} |"
        )
        summary[name] = dict(
            top1=r["top1"], mean_class=r["mean_class"], fused_with_rgb=fused,
            cnn_fps=r["frames_per_s"], motion_fps=motion, total_fps=total,
        )  # fmt: skip
    text = "\n".join(table)
    print()
    print(text)
    print(f"(seed {cfg.seed}; {len(results[order[0]]['labels'])} test videos; one CPU thread; "
          "motion fps: MV = reading vectors from the H.264 stream, flow = TV-L1 "
          f"'{cfg.flow_preset}' on decoded frames; CNN fps counts the {cfg.new_length} "
          "frames of a stack; total = both in sequence)")  # fmt: skip
    if rgb is not None:
        names = [n for n in ("rgb_cnn", "mv_cnn_st_ti_dc") if n in results]
        print()
        print(format_table(fusion_table([results[n] for n in names], names, [1, 2][: len(names)])))
    best = "mv_cnn_st_ti_dc" if "mv_cnn_st_ti_dc" in results else order[-1]
    r = results[best]
    cm = confusion_matrix(r["scores"], r["labels"], len(r["classes"]))
    pngs: dict[str, Path] = {}
    pngs["confusion"] = _confusion_png(
        cm, [str(c) for c in r["classes"]], out / "confusion_dtmv.png",
        f"{LABELS[best]}: confusion on {len(r['labels'])} test videos "
        f"(top-1 {100 * r['top1']:.1f} %)",
    )  # fmt: skip
    for k, p in pngs.items():
        print(f"wrote {k:9s} {p}")
    assert abs(mean_class_accuracy(r["scores"], r["labels"]) - r["mean_class"]) < 1e-9
    rows = methods_step(cfg, root, out, ckpts, results, fps)
    methods_text = methods_table(rows)
    print()
    print(methods_text)
    print("(one CPU thread; frames/s per stage: a video's frames over the stage's time; total = "
          "the stages in sequence; fusion rows run every stream they fuse)")  # fmt: skip
    pngs["accuracy_fps"] = accuracy_fps_png(rows, out / "accuracy_vs_fps.png")
    dmc = out / "runs" / "dmcnet" / "dmc_net" / "last.ckpt"
    pngs.update(_field_pngs(cfg, root, out, dmc=dmc if dmc.is_file() else None))
    for k, p in pngs.items():
        if k.startswith("motion_") or k == "accuracy_fps":
            print(f"wrote {k:9s} {p}")
    figures = {f"frame vs motion vectors vs TV-L1: {Path(p).stem[len('motion_'):]}": p
               for k, p in pngs.items() if k.startswith("motion_")}  # fmt: skip
    if (out / "mv_block_to_pixels.png").is_file():
        figures["a codec's block field to pixels and to the network's size"] = (
            out / "mv_block_to_pixels.png"
        )
    figures[f"confusion matrix of {LABELS[best]}"] = pngs["confusion"]
    figures["accuracy vs frames/s of every method"] = pngs["accuracy_fps"]
    pngs["report"] = write_report(
        out,
        [("Zhang et al.'s streams (first table)", text), ("Every method (second table)",
                                                         methods_text)],
        figures,
        f"Synthetic motion classes, {cfg.width}x{cfg.height}, seed {cfg.seed}; "
        f"{len(results[order[0]]['labels'])} test videos; one CPU thread.",
    )  # fmt: skip
    print(f"wrote report    {pngs['report']}")
    report = {"config": asdict(cfg), "results": summary, "table": text,
              "methods": [dict(asdict(r), total_fps=r.total_fps) for r in rows],
              "methods_table": methods_text,
              "pngs": {k: str(v) for k, v in pngs.items()}}  # fmt: skip
    from ._io import atomic_write_text

    atomic_write_text(out / "results.json", json.dumps(report, indent=1, default=str))
    atomic_write_text(out / "results.md", text + "\n\n" + methods_text + "\n")
    return report


def methods_step(cfg: DemoConfig, root: Path, out: Path, ckpts: dict, results: dict,
                 fps: dict) -> list:  # fmt: skip
    """Step 5: the MV-CNN rows of the first table, then every part of :mod:`.demo_parts`."""
    import importlib

    from .demo_parts import PARTS, DemoContext, MethodResult

    rows = []
    for name in ("mv_cnn_scratch", "mv_cnn_st_ti_dc", "teacher_flow"):
        if name in results:
            r = results[name]
            motion = "read MV" if STREAMS[name][0] == "mv" else "decode + TV-L1"
            rows.append(MethodResult(
                LABELS[name], STREAMS[name][0], r["top1"], r["mean_class"],
                {motion: fps[STREAMS[name][0]], "network": r["frames_per_s"]},
                TRAIN_SECONDS.get(name, 0.0),
                "the first table's" + (" (flow teacher alone)" if name == "teacher_flow" else ""),
            ))  # fmt: skip
    ctx = DemoContext(
        cfg=cfg, root=root, runs=out / "runs", scores=out / "scores", checkpoints=dict(ckpts),
        results=dict(results), motion_fps=dict(fps),
    )  # fmt: skip
    for part in PARTS if cfg.methods is None else cfg.methods:
        module = importlib.import_module(f"{__package__}.demo_parts.{part}")
        t0 = time.perf_counter()
        got = module.run(ctx)
        print(f"method part {part}: {len(got)} rows in {time.perf_counter() - t0:.1f} s")
        rows.extend(got)
    return rows


def methods_table(rows) -> str:
    """The second table: one row per method, accuracy and frames/s per stage."""
    lines = [
        "| method | test input | top-1 % | mean class % | frames/s per stage | total fps "
        "| train s | note |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for r in rows:
        stages = ", ".join(f"{k} {v:.0f}" for k, v in r.stage_fps.items())
        lines.append(
            f"| {r.name} | {r.inputs} | {100 * r.top1:.1f} | {100 * r.mean_class:.1f} | "
            f"{stages} | {r.total_fps:.0f} | {r.train_s:.0f} | {r.note} |"
        )
    return "\n".join(lines)


def run(
    out_dir: str | Path = "out/demo",
    config: DemoConfig | None = None,
    threads: int = 1,
    all_strategies: bool = False,
    quick: bool = False,
) -> dict:
    """Run the demo, write its outputs under ``out_dir``, return the results.

    Args:
        out_dir: where the videos, prepared data, runs, scores and PNGs go.
        config: the scale (:class:`DemoConfig`).
        threads: torch threads (1: on a busy shared machine a second thread mostly contends).
        all_strategies: also train TI, ST, ST+TI and TI+DC students.
        quick: only the ops step (seconds; what the CLI tests run).
    """
    from .info import collect, format_facts

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(format_facts(collect()))
    print()
    t0 = time.perf_counter()
    paths = ops_step(out)
    if quick:
        return {"pngs": paths}
    cfg = config or DemoConfig()
    if all_strategies:
        cfg.streams = tuple(STREAMS)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    # Lightning's per-trainer banners ("GPU available: False", tips) would drown the demo's lines
    # (levels set after Lightning's import, which configures its loggers).
    import lightning  # noqa: F401

    quiet = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric",
                                            "lightning_utilities")]  # fmt: skip
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)
    try:
        report = pipeline(cfg, out)
    finally:
        torch.set_num_threads(before)
        for q, lv in zip(quiet, levels, strict=True):
            q.setLevel(lv)
    report["pngs"].update({k: str(v) for k, v in paths.items()})
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return report
