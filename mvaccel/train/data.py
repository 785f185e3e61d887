"""Lightning data module over a prepared dataset folder (UCF101, HMDB51, synthetic).

The folder is what ``mvaccel prepare ucf101|hmdb51 SRC OUT`` writes::

    OUT/videos/<Class>/<video>.mp4                the (re-encoded) videos
    OUT/flow/<Class>/<video>/flow_x_00001.jpg     TV-L1 flow, tvl1(I_t, I_{t-1}) in file t
    OUT/lists/classInd.txt, trainlist0N.txt, testlist0N.txt   (UCF101 format, HMDB51 too)

A folder of videos with UCF101 lists beside them (the synthetic data, an unpacked UCF101) works
as well: ``videos`` and ``lists`` default to the root itself when those sub-folders are absent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from ..data import transforms as tf
from ..data.datasets import FIELDS, MODALITIES, EpochSampler, VideoDataset, num_channels
from ..data.lists import (
    hmdb51_classes,
    hmdb51_split,
    kinetics_classes,
    kinetics_list,
    read_class_index,
    ucf101_split,
)

LIST_FORMATS = ("ucf101", "hmdb51", "kinetics")
#: Kinetics: the csv and the download folder of each subset (the validation set is the test).
KINETICS_FILES = {"train": ("train.csv", "train"), "test": ("validate.csv", "val")}


def cover_clip_starts(num_frames: int, extent: int, count: int) -> list[int]:
    """Start frames of test clips that cover a whole video (multi-clip testing).

    Args:
        num_frames: frames (or motion fields) in the video.
        extent: frames one clip spans, ``(clip_len - 1) * stride + 1``.
        count: clips spread evenly from the first frame to the last (the first starts at 0,
            the last ends at the video's end; 1: the centred clip); ``0``: every
            non-overlapping clip, back to back, the last one moved to end with the video
            (MARS's test protocol).

    Returns:
        Start frames; a video shorter than a clip gives starts of 0 (the clip loops).
    """
    if num_frames < 1 or extent < 1 or count < 0:
        raise ValueError(f"cover_clip_starts: need num_frames, extent >= 1 and count >= 0, got "
                         f"{num_frames}, {extent}, {count}")  # fmt: skip
    last = max(0, num_frames - extent)
    if count == 0:
        return [min(i * extent, last) for i in range(max(1, math.ceil(num_frames / extent)))]
    if count == 1:
        return [last // 2]
    return [int(round(v)) for v in np.linspace(0, last, count)]


class MultiClipDataset(VideoDataset):
    """A clip dataset (``sampling="clip"``) whose test samples are several clips of a video.

    A test sample is ``(S, C, K, H, W)`` per modality, ``S`` clips that cover the video
    (:func:`cover_clip_starts`); the evaluation averages the network's scores over them (the
    papers' test protocol for 3D CNNs, MARS's average over the whole video). Training samples
    are :class:`VideoDataset`'s (one random clip). With ``num_clips=0`` the clip count varies
    from video to video: evaluate with one video per batch.

    Args:
        num_clips: clips per test video (see :func:`cover_clip_starts`).
        **kw: :class:`VideoDataset`'s arguments; ``sampling`` must be ``"clip"``.
    """

    def __init__(self, *args, num_clips: int = 0, **kw):
        super().__init__(*args, **kw)
        if self.sampling != "clip":
            raise ValueError(f"MultiClipDataset needs sampling='clip', got {self.sampling!r}")
        if num_clips < 0:
            raise ValueError(f"num_clips must be >= 0, got {num_clips}")
        self.num_clips = num_clips

    def frames(self, video, rng):  # noqa: D102
        if self.train:
            return super().frames(video, rng)
        motion = any(m in FIELDS for m in self.modalities)
        n = video.num_frames() - (1 if motion else 0)
        first = 1 if motion else 0
        k, step = self.new_length, self.clip_stride
        starts = cover_clip_starts(n, (k - 1) * step + 1, self.num_clips)
        return [[first + (st + i * step) % n for i in range(k)] for st in starts]


class VideoDataModule(L.LightningDataModule):
    """Train / validation loaders of one split, for any modalities.

    Training batches are ``(*modalities, y)`` (``(x, y)`` for a classifier, ``(mv, flow, y)``
    for motion-vector transfer); validation batches ``(*val_modalities, y)``, by default the
    first modality only (the student reads only motion vectors at test time).

    Args:
        root: the prepared dataset folder (see the module docstring).
        list_format: ``"ucf101"`` (classInd + train/testlist, what ``prepare`` writes for both
            datasets), ``"hmdb51"`` (the original ``<class>_test_splitN.txt`` files) or
            ``"kinetics"`` (``train.csv`` / ``validate.csv`` in ``list_dir``, clips under
            ``videos/train`` and ``videos/val``: :func:`mvaccel.data.lists.kinetics_list`;
            ``split`` is ignored).
        split: 1, 2 or 3.
        list_dir / video_root / flow_root / frame_root: override the folders under ``root``.
        mv_root: read the motion vectors from the ``.npz`` files of ``mvaccel mv VIDEOS --out
            MV_ROOT`` instead of decoding them (:class:`mvaccel.data.VideoDataset`'s ``mv_root``).
        video_ext: replaces the list's extension when reading videos (None: keep).
        modalities: training inputs, of ``mv``, ``residual``, ``flow``, ``rgb``.
        val_modalities: validation inputs (default: ``modalities[:1]``).
        num_segments / new_length / sampling / test_segments / clip_stride / size / scales /
        flip / block / accumulate / bound / motion_std / flow_bound / flow_negate / rgb_norm /
        cache: as
            :class:`mvaccel.data.VideoDataset` (``test_segments``: OFF's beta, the count that
            fixes the training interval of ``sampling="fixed"``; default ``val_segments``;
            at test the interval comes from the segments sampled).
        val_segments / val_crops: the validation protocol (segments, 1 or 10 crops).
        test_clips: clip models (``sampling="clip"``): clips per validation / test video
            covering the whole video (:class:`MultiClipDataset`; 0: every non-overlapping
            clip, MARS's protocol); None: one centred clip.
        batch_size / val_batch_size / num_workers: loaders (per process under DDP).
        synthetic: if given (fields of :class:`mvaccel.data.synthetic.SyntheticSpec`),
            ``prepare_data`` writes the synthetic videos into ``root`` first.
        flow_preset: if given and a modality needs flow that is not there yet,
            ``prepare_data`` computes it (``mvaccel flow --backward --preset flow_preset``).
        seed: of the training data's order, positions, crops and flips (a function of the seed,
            the epoch and the video: a resumed run sees the same data as an uninterrupted one).
        aux: multi-task training (Zhang et al. train HMDB51 together with UCF101): the settings
            of a second dataset, e.g. ``{root: data/ucf101_original}``; every other argument is
            this module's (``modalities``: the first one only, what the second head reads;
            ``root``-derived folders and ``list_format`` reset). Training batches become
            ``{"main": batch, "aux": batch}`` (the shorter loader cycles); validation reads the
            main dataset only. The model needs ``aux_num_classes`` = the aux lists' classes.
    """

    def __init__(
        self,
        root: str,
        list_format: str = "ucf101",
        split: int = 1,
        list_dir: str | None = None,
        video_root: str | None = None,
        flow_root: str | None = None,
        frame_root: str | None = None,
        mv_root: str | None = None,
        video_ext: str | None = None,
        modalities: Sequence[str] = ("mv",),
        val_modalities: Sequence[str] | None = None,
        num_segments: int = 3,
        new_length: int = 10,
        sampling: str = "tsn",
        test_segments: int | None = None,
        clip_stride: int = 1,
        size: int = 224,
        scales: Sequence[float] = (1.0, 0.875, 0.75),
        flip: bool = True,
        block: int = 8,
        accumulate: bool = False,
        bound: float = 20.0,
        motion_std: float = 1.0,
        flow_bound: float = 20.0,
        flow_negate: bool = False,
        rgb_norm: str = "imagenet",
        val_segments: int = 5,
        val_crops: int = 1,
        test_clips: int | None = None,
        batch_size: int = 32,
        val_batch_size: int | None = None,
        num_workers: int = 4,
        cache: bool = False,
        synthetic: dict | None = None,
        flow_preset: str | None = None,
        seed: int = 0,
        aux: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if list_format not in LIST_FORMATS:
            raise ValueError(f"list_format must be one of {LIST_FORMATS}, got {list_format!r}")
        mods = tuple(modalities)
        if not mods or any(m not in MODALITIES for m in mods):
            raise ValueError(f"modalities must be names of {MODALITIES}, got {modalities}")
        self.modalities = mods
        self.val_modalities = tuple(val_modalities) if val_modalities else mods[:1]
        r = Path(root)
        self.root = r
        self.list_dir = Path(list_dir) if list_dir else (r / "lists" if (r / "lists").is_dir()
                                                         else r)  # fmt: skip
        self.video_root = Path(video_root) if video_root else (
            r / "videos" if (r / "videos").is_dir() else r)  # fmt: skip
        self.flow_root = Path(flow_root) if flow_root else r / "flow"
        self.frame_root = Path(frame_root) if frame_root else None
        self.mv_root = Path(mv_root) if mv_root else None
        self.aux_module = None
        if aux:
            own = {k: v for k, v in self.hparams.items() if not k.startswith("_")}
            for k in ("aux", "synthetic", "list_dir", "video_root", "flow_root", "frame_root",
                      "mv_root", "list_format", "video_ext", "val_modalities"):  # fmt: skip
                own.pop(k, None)
            own["modalities"] = list(mods[:1])
            if "root" not in aux:
                raise ValueError(f"data.aux needs the second dataset's root, got {aux}")
            self.aux_module = VideoDataModule(**{**own, **dict(aux)})

    # ---- what the model needs to know ----

    @property
    def classes(self) -> list[str]:
        """Class names in label order."""
        if self.hparams.list_format == "hmdb51":
            return hmdb51_classes(self.list_dir)
        if self.hparams.list_format == "kinetics":
            return kinetics_classes(self.list_dir / KINETICS_FILES["train"][0])
        return read_class_index(self.list_dir / "classInd.txt")

    @property
    def num_classes(self) -> int:
        """Number of classes (read from the lists)."""
        return len(self.classes)

    @staticmethod
    def in_channels(modalities: Sequence[str], new_length: int, sampling: str = "tsn") -> int:
        """Input channels of the first modality (the network's input).

        A 2D stack of ``new_length`` frames has ``new_length`` times a frame's channels; a clip
        (``sampling="clip"``, ``(C, K, H, W)`` for 3D CNNs) has a frame's channels.
        """
        return num_channels(list(modalities)[0], 1 if sampling == "clip" else new_length)

    # ---- data ----

    def items(self, subset: str):
        """The split's videos of ``subset``."""
        if self.hparams.list_format == "kinetics":
            if subset not in KINETICS_FILES:
                raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
            name, folder = KINETICS_FILES[subset]
            return kinetics_list(self.list_dir / name, self.classes, folder)
        fn = hmdb51_split if self.hparams.list_format == "hmdb51" else ucf101_split
        return fn(self.list_dir, self.hparams.split, subset)

    def prepare_data(self) -> None:
        """Write the synthetic videos and compute missing flow (when configured)."""
        hp = self.hparams
        if hp.synthetic is not None:
            from ..data.synthetic import SyntheticSpec, write_synthetic_dataset

            spec = dict(hp.synthetic)
            if "classes" in spec:
                spec["classes"] = tuple(spec["classes"])
            write_synthetic_dataset(self.root, SyntheticSpec(**spec))
        needs_flow = "flow" in self.modalities + self.val_modalities
        if needs_flow and hp.flow_preset and not self.flow_root.is_dir():
            from ..cli import main as cli_main

            rc = cli_main(["flow", str(self.video_root), str(self.flow_root), "--backward",
                           "--preset", hp.flow_preset, "--bound", str(hp.flow_bound),
                           "--quiet"])  # fmt: skip
            if rc:
                raise RuntimeError(f"computing flow into {self.flow_root} failed")

    def dataset(self, subset: str, modalities=None, train: bool | None = None, **overrides):
        """A :class:`VideoDataset` of ``subset`` with this module's settings."""
        hp = self.hparams
        train = subset == "train" if train is None else train
        kw = dict(
            flow_root=self.flow_root, frame_root=self.frame_root, mv_root=self.mv_root,
            video_ext=hp.video_ext,
            num_segments=hp.num_segments if train else hp.val_segments,
            new_length=hp.new_length, train=train, sampling=hp.sampling,
            # At test the count sampled is beta itself; in training beta is configured.
            test_segments=(hp.get("test_segments") or hp.val_segments) if train else None,
            clip_stride=hp.get("clip_stride", 1), size=hp.size,
            scales=tuple(hp.scales) if hp.scales else tf.TSN_SCALES, flip=hp.flip,
            test_crops=hp.val_crops, block=hp.block, accumulate=hp.accumulate, bound=hp.bound,
            motion_std=hp.motion_std, flow_bound=hp.flow_bound, flow_negate=hp.flow_negate,
            rgb_norm=hp.get("rgb_norm", "imagenet"), cache=hp.cache, seed=hp.seed,
        )  # fmt: skip
        clips = overrides.pop("test_clips", hp.get("test_clips"))
        kw.update(overrides)
        mods = modalities or (self.modalities if train else self.val_modalities)
        if clips is not None and not train and kw["sampling"] == "clip":
            return MultiClipDataset(self.items(subset), self.video_root, mods, num_clips=clips,
                                    **kw)  # fmt: skip
        return VideoDataset(self.items(subset), self.video_root, mods, **kw)

    def setup(self, stage: str | None = None) -> None:  # noqa: D102
        if stage in (None, "fit"):
            self.train_set = self.dataset("train")
            if self.aux_module is not None:
                self.aux_module.setup("fit")
        if stage in (None, "fit", "validate"):
            self.val_set = self.dataset("test", train=False)

    def _loader(self, ds, batch_size: int, sampler=None) -> DataLoader:
        n = self.hparams.num_workers
        return DataLoader(
            ds, batch_size=batch_size, sampler=sampler, num_workers=n, drop_last=False,
            persistent_workers=n > 0, pin_memory=False,
        )  # fmt: skip

    def train_dataloader(self):  # noqa: D102
        # The epoch the trainer is at (restored on resume): Lightning sets later epochs itself.
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        sampler = EpochSampler(len(self.train_set), True, self.hparams.seed, epoch)
        main = self._loader(self.train_set, self.hparams.batch_size, sampler)
        if self.aux_module is None:
            return main
        aux = self.aux_module
        aux_sampler = EpochSampler(len(aux.train_set), True, aux.hparams.seed, epoch)
        # Lightning combines a dict of loaders into {"main": batch, "aux": batch} steps.
        return {"main": main,
                "aux": aux._loader(aux.train_set, aux.hparams.batch_size, aux_sampler)}  # fmt: skip

    def val_dataloader(self) -> DataLoader:  # noqa: D102
        hp = self.hparams
        return self._loader(self.val_set, hp.val_batch_size or hp.batch_size)
