"""Data layer: datasets, split lists, frame sampling and motion-aware transforms."""

from . import sampling, transforms
from .datasets import (
    CompressedVideoDataset,
    FlowDataset,
    PairedTransferDataset,
    RGBDataset,
    SyntheticMotionDataset,
    VideoDataset,
)
from .lists import VideoItem, hmdb51_classes, hmdb51_split, read_class_index, ucf101_split

__all__ = [
    "CompressedVideoDataset",
    "FlowDataset",
    "PairedTransferDataset",
    "RGBDataset",
    "SyntheticMotionDataset",
    "VideoDataset",
    "VideoItem",
    "hmdb51_classes",
    "hmdb51_split",
    "read_class_index",
    "sampling",
    "transforms",
    "ucf101_split",
]
