"""Video-level evaluation (``mvaccel eval``) and score fusion (``mvaccel fuse``).

The papers' protocol: ``S`` segments per video (25), one centre crop or ten crops per segment,
the network's scores averaged over all of them, top-1 over videos. Per-video scores are saved as
``.npz`` files (``scores (N, K)`` float32 averaged logits, ``labels (N,)``, ``videos (N,)``,
``classes (K,)``) and fused by weighted averaging of their softmax probabilities (two-stream:
spatial : temporal = 1 : 2).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn


def load_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint saved by :mod:`mvaccel.train` (on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise ValueError(f"{path}: not a Lightning checkpoint of mvaccel.train (no hparams)")
    return ckpt


def _module_class(ckpt: dict) -> type:
    """The LightningModule class that saved ``ckpt``."""
    import importlib

    from .modules import ActionClassifier, MotionVectorTransfer

    hp = ckpt["hyper_parameters"]
    name = ckpt.get("mvaccel_module") or hp.get("_class_path")
    if name is None:  # checkpoints of earlier versions: a classifier or a transfer student
        return MotionVectorTransfer if "teacher_init" in hp else ActionClassifier
    module, _, qualname = name.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), qualname)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"checkpoint of unknown module class {name!r}: {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, ActionClassifier)):
        raise ValueError(f"checkpoint module class {name!r} is not an mvaccel.train module")
    return cls


def module_from_checkpoint(ckpt: dict):
    """The method's LightningModule, rebuilt for inference (no teacher) with the trained weights.

    The class is the one that saved the checkpoint; its ``INFERENCE_OVERRIDES`` replace
    training-only hyper-parameters, and weights under its ``TRAINING_ONLY`` prefixes may be
    left out. Any other missing or unexpected weight is an error.
    """
    cls = _module_class(ckpt)
    hp = {k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")}
    hp.update(cls.INFERENCE_OVERRIDES)
    model = cls(**hp)
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    unexpected = [k for k in unexpected if not k.startswith(cls.TRAINING_ONLY)]
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not fit {cls.__name__}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return model.eval()


def network_from_checkpoint(ckpt: dict) -> nn.Module:
    """The trained network evaluation runs, in eval mode (a student, never its teacher).

    :meth:`ActionClassifier.inference_network` of :func:`module_from_checkpoint`.
    """
    return module_from_checkpoint(ckpt).inference_network().eval()


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of ``(N, K)`` scores."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 2 or len(scores) != len(labels):
        raise ValueError(f"accuracy: scores {scores.shape} and labels {labels.shape} disagree")
    return float((scores.argmax(1) == labels).mean()) if len(labels) else float("nan")


def confusion_matrix(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K, K)`` counts: row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(scores).argmax(1)), 1)
    return cm


def mean_class_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present of their recall (TSN's second number)."""
    cm = confusion_matrix(scores, labels, np.asarray(scores).shape[1])
    seen = cm.sum(1) > 0
    return float((np.diag(cm)[seen] / cm.sum(1)[seen]).mean())


def limit_subset(labels: Sequence[int], limit: int, seed: int = 0) -> list[int]:
    """A seeded, class-stratified choice of ``limit`` item indices (sorted).

    Lists are sorted by class, so their first ``limit`` videos are one or two classes: a
    network at chance that always answers the first class would score 100 % on them. Instead
    every class's videos are shuffled with ``seed`` and the classes take turns (in a shuffled
    order) until ``limit`` are chosen: at most one apart in count per class.

    Args:
        labels: ``(N,)`` the label of every item, in list order.
        limit: how many to choose (all when ``limit >= N``).
        seed: of the shuffles.

    Returns:
        Sorted indices into ``labels``.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    labels = np.asarray(labels)
    if limit >= len(labels):
        return list(range(len(labels)))
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))
    queues = [list(rng.permutation(np.flatnonzero(labels == c))) for c in classes]
    chosen: list[int] = []
    while len(chosen) < limit:
        for q in queues:
            if q and len(chosen) < limit:
                chosen.append(int(q.pop()))
    return sorted(chosen)


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Non-interpolated average precision of one class (THUMOS14's recognition measure).

    Videos are ranked by ``scores``; AP is the mean, over the positives, of the precision at
    each positive's rank (the TRECVID measure the THUMOS14 evaluation kit computes). Ties keep
    list order.

    Args:
        scores: ``(N,)`` the class's score of every video.
        positive: ``(N,)`` bool, whether the video shows the class.

    Returns:
        AP in [0, 1]; NaN when no video is positive.
    """
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    if scores.shape != positive.shape or scores.ndim != 1:
        raise ValueError(f"average_precision: scores {scores.shape}, positive {positive.shape}")
    if not positive.any():
        return float("nan")
    hits = positive[np.argsort(-scores, kind="stable")]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean over the classes with a positive video of :func:`average_precision` (THUMOS14 mAP).

    Args:
        scores: ``(N, K)`` per-video class scores (any monotone scale: logits, probabilities).
        targets: ``(N,)`` one label per video, or ``(N, K)`` 0/1 (untrimmed THUMOS14 videos may
            show several actions; a background video is a row of zeros).
    """
    scores = np.asarray(scores)
    targets = np.asarray(targets)
    if targets.ndim == 1:
        onehot = np.zeros(scores.shape, bool)
        onehot[np.arange(len(targets)), targets] = True
        targets = onehot
    if scores.ndim != 2 or targets.shape != scores.shape:
        raise ValueError(f"mean_average_precision: scores {scores.shape}, targets "
                         f"{targets.shape}")  # fmt: skip
    aps = [average_precision(scores[:, k], targets[:, k]) for k in range(scores.shape[1])]
    aps = [a for a in aps if not np.isnan(a)]
    return float(np.mean(aps)) if aps else float("nan")


def mean_over_splits(results: Sequence[dict]) -> dict:
    """The papers' "mean over the three splits": per-split and mean top-1 / mean class.

    Args:
        results: score dicts (:func:`evaluate` or :func:`load_scores`) of splits 1, 2, 3 (any
            number >= 1; each is scored on its own videos).

    Returns:
        ``top1`` and ``mean_class``: the means over the splits; ``per_split``: a list of
        ``(top1, mean_class)``.
    """
    if not results:
        raise ValueError("mean_over_splits: no results")
    per = [(accuracy(r["scores"], r["labels"]), mean_class_accuracy(r["scores"], r["labels"]))
           for r in results]  # fmt: skip
    return {
        "top1": float(np.mean([p[0] for p in per])),
        "mean_class": float(np.mean([p[1] for p in per])),
        "per_split": per,
    }


def thumos14_map(result: dict, list_path: str | Path) -> float:
    """THUMOS14 mAP of a score dict (:func:`evaluate` / :func:`load_scores`) against a list.

    Args:
        result: per-video ``scores``, ``videos`` and ``classes`` (UCF101's 101).
        list_path: a :func:`mvaccel.data.lists.thumos14_list` file of the same videos
            (matched by file stem, so ``videos/video_test_0000004.mp4`` matches
            ``video_test_0000004``).

    Returns:
        :func:`mean_average_precision` over the classes with a positive video.

    Raises:
        ValueError: a scored video missing from the list, or the list's videos not all scored.
    """
    from ..data.lists import thumos14_list

    items, targets = thumos14_list(list_path, [str(c) for c in result["classes"]])
    row = {Path(it.path).stem: i for i, it in enumerate(items)}
    stems = [Path(str(v)).stem for v in result["videos"]]
    missing = [v for v in stems if v not in row]
    if missing or len(set(stems)) != len(row):
        raise ValueError(
            f"thumos14_map: the scores and {list_path} cover different videos (not in the list: "
            f"{missing[:3]}; {len(set(stems))} scored, {len(row)} listed)"
        )
    return mean_average_precision(result["scores"], targets[[row[v] for v in stems]])


def evaluate_splits(checkpoints: Sequence[str | Path], **kw) -> dict:
    """:func:`evaluate` one checkpoint per split (splits 1, 2, 3 in order) and average them.

    Args:
        checkpoints: the checkpoints trained on splits 1, 2 (and 3).
        **kw: :func:`evaluate`'s arguments (each run gets ``split=i``).

    Returns:
        :func:`mean_over_splits` of the results, plus ``results`` (one score dict per split).
    """
    if not 1 <= len(checkpoints) <= 3:
        raise ValueError(f"evaluate_splits: 1 to 3 checkpoints (splits 1..3), got "
                         f"{len(checkpoints)}")  # fmt: skip
    results = [evaluate(c, split=i, **kw) for i, c in enumerate(checkpoints, 1)]
    return {**mean_over_splits(results), "results": results}


def save_scores(path: str | Path, result: dict) -> Path:
    """Write a result of :func:`evaluate` as ``.npz`` atomically."""
    from .._io import atomic_path

    path = Path(path)
    arrays = {k: np.asarray(v) for k, v in result.items() if k in SCORE_KEYS}
    meta = {k: v for k, v in result.items() if k not in SCORE_KEYS}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays, meta=np.asarray(repr(meta)))
    return path


SCORE_KEYS = ("scores", "labels", "videos", "classes")


def load_scores(path: str | Path) -> dict:
    """Read a :func:`save_scores` file: ``scores``, ``labels``, ``videos``, ``classes``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"score file not found: {path}")
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("scores", "labels", "videos") if k not in z]
        if missing:
            raise ValueError(f"{path}: not a score file, missing {missing}")
        out = {k: z[k] for k in z.files if k != "meta"}
    if out["scores"].ndim != 2 or len(out["scores"]) != len(out["labels"]):
        raise ValueError(f"{path}: scores {out['scores'].shape}, labels {out['labels'].shape}")
    return out


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def fuse(
    results: Sequence[dict], weights: Sequence[float] | None = None, softmax: bool = True
) -> dict:
    """Weighted score fusion of several streams over the same videos.

    Args:
        results: score dicts (:func:`load_scores`); videos are matched by name, so the files
            may list them in different orders, but must hold the same set.
        weights: one per result (default all 1; two-stream: RGB 1, temporal 2).
        softmax: fuse softmax probabilities (True) or the raw averaged scores.

    Returns:
        A score dict of the fused scores in the first result's video order.
    """
    if not results:
        raise ValueError("fuse: no score files")
    weights = [1.0] * len(results) if weights is None else [float(w) for w in weights]
    if len(weights) != len(results):
        raise ValueError(f"fuse: {len(results)} score files but {len(weights)} weights")
    ref = results[0]
    order = {str(v): i for i, v in enumerate(ref["videos"])}
    total = np.zeros(ref["scores"].shape, np.float64)
    for r, w in zip(results, weights, strict=True):
        names = [str(v) for v in r["videos"]]
        if sorted(names) != sorted(order) or r["scores"].shape != ref["scores"].shape:
            raise ValueError(
                "fuse: the score files cover different videos or classes "
                f"({r['scores'].shape} vs {ref['scores'].shape})"
            )
        idx = np.array([order[n] for n in names])
        if not np.array_equal(np.asarray(r["labels"]), np.asarray(ref["labels"])[idx]):
            raise ValueError("fuse: the score files disagree on the labels of some videos")
        s = _softmax(r["scores"].astype(np.float64)) if softmax else r["scores"]
        total[idx] += w * s
    out = dict(ref)
    out["scores"] = (total / sum(weights)).astype(np.float32)
    return out


def fusion_table(
    results: Sequence[dict],
    names: Sequence[str],
    weights: Sequence[float] | None = None,
    softmax: bool = True,
) -> list[tuple[str, str, float, float]]:
    """Rows ``(name, weight, top-1, mean class accuracy)`` per stream and for the fusion."""
    weights = [1.0] * len(results) if weights is None else list(weights)
    if not len(names) == len(weights) == len(results):
        raise ValueError(
            f"fusion_table: {len(results)} results, {len(names)} names, {len(weights)} weights"
        )
    rows = [
        (n, f"{w:g}", accuracy(r["scores"], r["labels"]), mean_class_accuracy(r["scores"],
                                                                                r["labels"]))
        for n, r, w in zip(names, results, weights, strict=True)
    ]  # fmt: skip
    if len(results) > 1:
        f = fuse(results, weights, softmax)
        ratio = " : ".join(f"{w:g}" for w in weights)
        rows.append((
            "fused", ratio, accuracy(f["scores"], f["labels"]),
            mean_class_accuracy(f["scores"], f["labels"]),
        ))  # fmt: skip
    return rows


def format_table(rows, header=("scores", "weight", "top-1", "mean class")) -> str:
    """A Markdown table of :func:`fusion_table` rows (accuracies in %)."""
    lines = ["| " + " | ".join(header) + " |", "| --- | --- | ---: | ---: |"]
    for n, w, a, m in rows:
        lines.append(f"| {n} | {w} | {100 * a:.1f} | {100 * m:.1f} |")
    return "\n".join(lines)


def evaluate(
    checkpoint: str | Path,
    *,
    subset: str = "test",
    segments: int = 25,
    crops: int = 1,
    batch_size: int = 1,
    num_workers: int = 0,
    device: str = "cpu",
    limit: int | None = None,
    limit_seed: int = 0,
    clips: int | None = None,
    progress: bool = True,
    **data_overrides,
) -> dict:
    """Video-level scores of a trained checkpoint on a split.

    The data settings come from the checkpoint (the data module's saved hyper-parameters:
    root, split, new_length, size, bound...), overridable by ``data_overrides`` (any
    :class:`~mvaccel.train.data.VideoDataModule` argument, e.g. ``root=...``, ``split=2``).
    The network reads the data module's validation modalities (a transfer student: its motion
    vectors only; DMC-Net: vectors and residuals), one tensor each.

    Args:
        checkpoint: a ``.ckpt`` of ``mvaccel train``.
        subset: ``"test"`` or ``"train"``.
        segments: segments per video (25 in the papers).
        crops: 1 (centre) or 10 (corners + centre, flipped too).
        batch_size: videos per batch.
        num_workers: data loader workers.
        device: ``"cpu"``, ``"cuda"``...
        limit: evaluate only ``limit`` videos, a seeded class-stratified subset
            (:func:`limit_subset`; the lists are sorted by class, their first videos are not
            a sample).
        limit_seed: the subset's seed.
        clips: clip models (``sampling="clip"``, 3D CNNs) only: average over ``clips`` clips
            spread evenly from the video's first frame to its last, or ``0`` for every
            non-overlapping clip (MARS); ``None``: the data module's ``test_clips`` (default
            one centred clip). ``segments`` does not apply to clip models; other models
            refuse ``clips`` (ValueError).
        progress: show a progress bar.
        **data_overrides: data module arguments replacing the checkpoint's.

    Returns:
        ``scores (N, K)`` averaged logits, ``labels``, ``videos``, ``classes``, ``top1``,
        ``mean_class``, ``modality``, ``segments``, ``crops``, ``cnn_inputs_per_s`` (stacks
        through the network per second), ``frames_per_s`` (that times the stack length: the
        paper's per-frame count) and ``videos_per_s`` (with data loading).
    """
    from torch.utils.data import DataLoader, Subset

    from .._io import progress as progress_bar
    from .data import VideoDataModule

    ckpt = load_checkpoint(checkpoint)
    saved = dict(ckpt.get("datamodule_hyper_parameters") or {})
    data_hp = {k: v for k, v in saved.items() if not k.startswith("_")}  # LightningCLI's
    data_hp.update(data_overrides)
    if "root" not in data_hp:
        raise ValueError(f"{checkpoint}: no data settings saved; pass root=... (--root)")
    dm = VideoDataModule(**data_hp)
    if clips is not None and dm.hparams.sampling != "clip":
        raise ValueError(
            f"{checkpoint}: clips={clips} is for clip models (sampling='clip', 3D CNNs); this "
            f"model samples {dm.hparams.sampling!r} segments: set segments instead"
        )
    modalities = dm.val_modalities
    extra = {} if clips is None else {"test_clips": clips}
    ds = dm.dataset(subset, modalities=modalities, train=False, num_segments=segments,
                    test_crops=crops, **extra)  # fmt: skip
    net = network_from_checkpoint(ckpt).to(device)
    if ckpt["hyper_parameters"]["num_classes"] != dm.num_classes:
        raise ValueError(
            f"{checkpoint}: trained for {ckpt['hyper_parameters']['num_classes']} classes, "
            f"the lists have {dm.num_classes}"
        )
    chosen = list(range(len(ds))) if limit is None else limit_subset(ds.labels, limit, limit_seed)
    n = len(chosen)
    loader = DataLoader(Subset(ds, chosen), batch_size=batch_size, num_workers=num_workers)
    scores, labels = [], []
    cnn_time, inputs = 0.0, 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for *xs, y in progress_bar(loader, not progress, total=len(loader), unit="batch"):
            # Every sample is (S, ...): fold the segments (and crops) into the batch.
            flats = [x.flatten(0, 1).to(device) for x in xs]
            if device != "cpu" and torch.cuda.is_available():
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = net(*flats)
            if device != "cpu" and torch.cuda.is_available():
                torch.cuda.synchronize()
            cnn_time += time.perf_counter() - t
            inputs += flats[0].shape[0]
            scores.append(out.view(len(y), -1, out.shape[-1]).mean(1).float().cpu())
            labels.append(y)
    total = time.perf_counter() - t0
    s = torch.cat(scores).numpy()
    lab = torch.cat(labels).numpy()
    k = dm.hparams.new_length
    return {
        "scores": s,
        "labels": lab,
        "videos": np.asarray([ds.items[i].path for i in chosen]),
        "classes": np.asarray(dm.classes),
        "top1": accuracy(s, lab),
        "mean_class": mean_class_accuracy(s, lab),
        "modality": "+".join(modalities),
        "segments": segments,
        "clips": getattr(ds, "num_clips", None),
        "crops": crops,
        "checkpoint": str(checkpoint),
        "cnn_inputs_per_s": inputs / max(cnn_time, 1e-9),
        "frames_per_s": inputs * k / max(cnn_time, 1e-9),
        "videos_per_s": n / max(total, 1e-9),
    }
