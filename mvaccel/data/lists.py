"""UCF101 and HMDB51 split lists: which video is in which split, with which label.

UCF101 (``ucfTrainTestlist/``): ``classInd.txt`` holds ``"<1-based index> <ClassName>"`` lines;
``trainlist0N.txt`` holds ``"<Class>/<video>.avi <1-based index>"`` and ``testlist0N.txt`` only
``"<Class>/<video>.avi"``. HMDB51 (``testTrainMulti_7030_splits/``): one file per class and split,
``<class>_test_split<N>.txt``, with ``"<video>.avi <tag>"`` lines, tag 1 = train, 2 = test,
0 = unused. Labels here are 0-based; HMDB51's classes are numbered in sorted name order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

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
