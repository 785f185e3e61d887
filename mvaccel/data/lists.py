"""UCF101 and HMDB51 split lists: which video is in which split, with which label.

UCF101 (``ucfTrainTestlist/``): ``classInd.txt`` holds ``"<1-based index> <ClassName>"`` lines;
``trainlist0N.txt`` holds ``"<Class>/<video>.avi <1-based index>"`` and ``testlist0N.txt`` only
``"<Class>/<video>.avi"``. HMDB51 (``testTrainMulti_7030_splits/``): one file per class and split,
``<class>_test_split<N>.txt``, with ``"<video>.avi <tag>"`` lines, tag 1 = train, 2 = test,
0 = unused. Labels here are 0-based; HMDB51's classes are numbered in sorted name order.

Kinetics (:func:`kinetics_list`): the released ``train.csv`` / ``validate.csv`` files, columns
``label,youtube_id,time_start,time_end,split``. THUMOS14 (:func:`thumos14_list`): untrimmed
validation / test videos with one or more of UCF101's 101 classes each (or none).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SUBSETS = ("train", "test")


@dataclass(frozen=True)
class VideoItem:
    """One video of a split: its path relative to the dataset root and its 0-based label."""

    path: str
    label: int

    @property
    def stem(self) -> str:
        """The file name without folder and extension (``v_ApplyEyeMakeup_g01_c01``)."""
        return Path(self.path).stem


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"split list not found: {path}")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def _check(split: int, subset: str) -> None:
    if split not in (1, 2, 3):
        raise ValueError(f"split must be 1, 2 or 3, got {split!r}")
    if subset not in SUBSETS:
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")


def read_class_index(path: str | Path) -> list[str]:
    """Read UCF101's ``classInd.txt``: the class names, position = 0-based label."""
    path = Path(path)
    pairs = []
    for i, ln in enumerate(_lines(path), 1):
        parts = ln.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{path}:{i}: expected '<index> <ClassName>', got {ln!r}")
        pairs.append((int(parts[0]), parts[1]))
    pairs.sort()
    if [p[0] for p in pairs] != list(range(1, len(pairs) + 1)):
        raise ValueError(f"{path}: class indices are not 1..{len(pairs)}")
    return [name for _, name in pairs]


def ucf101_split(list_dir: str | Path, split: int = 1, subset: str = "train") -> list[VideoItem]:
    """The videos of a UCF101 split.

    Args:
        list_dir: the folder holding ``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``.
        split: 1, 2 or 3.
        subset: ``"train"`` or ``"test"``.

    Returns:
        Items with paths as in the list (``"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"``).
    """
    _check(split, subset)
    list_dir = Path(list_dir)
    classes = read_class_index(list_dir / "classInd.txt")
    index = {name: i for i, name in enumerate(classes)}
    path = list_dir / f"{subset}list0{split}.txt"
    items = []
    for n, ln in enumerate(_lines(path), 1):
        parts = ln.split()
        video = parts[0]
        cls = video.split("/")[0]
        if cls not in index:
            raise ValueError(f"{path}:{n}: class {cls!r} of {video!r} is not in classInd.txt")
        label = index[cls]
        if len(parts) > 1 and int(parts[1]) - 1 != label:
            raise ValueError(
                f"{path}:{n}: label {parts[1]} of {video!r} disagrees with classInd.txt "
                f"({label + 1} = {cls})"
            )
        items.append(VideoItem(video, label))
    return items


_HMDB = re.compile(r"^(?P<cls>.+)_test_split(?P<split>[123])\.txt$")


def hmdb51_classes(list_dir: str | Path) -> list[str]:
    """HMDB51's class names in label order (sorted), from the split files' names."""
    names = {m["cls"] for p in Path(list_dir).glob("*.txt") if (m := _HMDB.match(p.name))}
    if not names:
        raise FileNotFoundError(f"no '<class>_test_split<N>.txt' files in {list_dir}")
    return sorted(names)


def hmdb51_split(list_dir: str | Path, split: int = 1, subset: str = "train") -> list[VideoItem]:
    """The videos of an HMDB51 split (tag 1 = train, 2 = test, 0 = not used).

    Returns:
        Items with paths ``"<class>/<video>.avi"`` (the layout of the extracted archives).
    """
    _check(split, subset)
    want = "1" if subset == "train" else "2"
    items = []
    for label, cls in enumerate(hmdb51_classes(list_dir)):
        path = Path(list_dir) / f"{cls}_test_split{split}.txt"
        for n, ln in enumerate(_lines(path), 1):
            parts = ln.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ValueError(f"{path}:{n}: expected '<video> <0|1|2>', got {ln!r}")
            if parts[1] == want:
                items.append(VideoItem(f"{cls}/{parts[0]}", label))
    return items


KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")


def kinetics_clip_path(label: str, youtube_id: str, start: int, end: int, folder: str = "") -> str:
    """Where a Kinetics clip lives: ``[folder/]<label>/<youtube_id>_<start:06d>_<end:06d>.mp4``.

    The layout the ActivityNet download script (``download.py``) writes, with the csv's label
    as the folder name.
    """
    name = f"{label}/{youtube_id}_{start:06d}_{end:06d}.mp4"
    return f"{folder}/{name}" if folder else name


def kinetics_classes(csv_path: str | Path) -> list[str]:
    """The class names of a Kinetics csv in label order (sorted, as the released models use)."""
    return sorted({row["label"] for row in _kinetics_rows(Path(csv_path))})


def _kinetics_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"Kinetics list not found: {path}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in KINETICS_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path}: not a Kinetics list: columns {reader.fieldnames}, missing {missing} "
                f"(expected {','.join(KINETICS_COLUMNS)})"
            )
        return list(reader)


def kinetics_list(
    csv_path: str | Path, classes: Sequence[str] | None = None, folder: str = ""
) -> list[VideoItem]:
    """The clips of a Kinetics csv (``label,youtube_id,time_start,time_end,split``).

    Args:
        csv_path: ``train.csv``, ``validate.csv`` (or ``test.csv`` where it has labels).
        classes: class names in label order (default: this file's, sorted; pass
            :func:`kinetics_classes` of ``train.csv`` for the validation list).
        folder: prefix of every path (e.g. ``"train"`` or ``"val"``, the download folders).

    Returns:
        Items with :func:`kinetics_clip_path` paths and 0-based labels.

    Raises:
        FileNotFoundError: no such file.
        ValueError: missing columns, a label outside ``classes``, times that are not integers.
    """
    path = Path(csv_path)
    rows = _kinetics_rows(path)
    classes = list(classes) if classes is not None else sorted({r["label"] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    items = []
    for n, r in enumerate(rows, 2):  # line 1 is the header
        if r["label"] not in index:
            raise ValueError(f"{path}:{n}: label {r['label']!r} is not one of the classes")
        try:
            start, end = int(float(r["time_start"])), int(float(r["time_end"]))
        except ValueError as e:
            raise ValueError(f"{path}:{n}: time_start/time_end must be seconds: {e}") from e
        clip = kinetics_clip_path(r["label"], r["youtube_id"], start, end, folder)
        items.append(VideoItem(clip, index[r["label"]]))
    return items


def thumos14_list(path: str | Path, classes: Sequence[str]) -> tuple[list[VideoItem], np.ndarray]:
    """THUMOS14's untrimmed recognition videos and their (multi-)labels.

    The file has one video per line: ``"<video> [<Class> ...]"``, the classes by name (UCF101's
    101, as ``classInd.txt``) or 1-based index; a video with no class is background (counted
    as a negative of every class by :func:`mvaccel.train.evaluate.mean_average_precision`).
    It is the ``primary_action`` / ``secondary_actions`` of the challenge's validation and
    test meta files, one line per video. Zhang et al. train on UCF101 plus the validation set
    and report test mAP (Tables IV and IX).

    Args:
        path: the list.
        classes: class names in label order (:func:`read_class_index`).

    Returns:
        ``items`` (label: the first class, -1 for background) and ``targets`` ``(N, K)`` bool,
        every class of every video.
    """
    path = Path(path)
    index = {c: i for i, c in enumerate(classes)}
    items, targets = [], []
    for n, ln in enumerate(_lines(path), 1):
        video, *names = ln.split()
        row = np.zeros(len(classes), bool)
        labels = []
        for c in names:
            k = int(c) - 1 if c.isdigit() else index.get(c, -1)
            if not 0 <= k < len(classes):
                raise ValueError(f"{path}:{n}: class {c!r} of {video!r} is not one of the "
                                 f"{len(classes)} classes")  # fmt: skip
            row[k] = True
            labels.append(k)
        items.append(VideoItem(video, labels[0] if labels else -1))
        targets.append(row)
    return items, np.stack(targets) if targets else np.zeros((0, len(classes)), bool)
