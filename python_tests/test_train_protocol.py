"""The papers' test protocols and data: multi-clip testing, list readers, multi-task training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from trainkit import SPEC, tiny_dataset

from mvaccel.train import ActionClassifier
from mvaccel.train.data import MultiClipDataset, VideoDataModule, cover_clip_starts
from mvaccel.train.evaluate import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny_dataset(tmp_path_factory)


def test_cover_clip_starts_span_the_whole_video():
    assert cover_clip_starts(100, 16, 0) == [0, 16, 32, 48, 64, 80, 84]  # MARS: back to back
    assert cover_clip_starts(100, 16, 3) == [0, 42, 84]  # first frame ... last frame
    assert cover_clip_starts(100, 16, 1) == [42]  # the centred clip
    assert cover_clip_starts(10, 16, 0) == [0] and cover_clip_starts(10, 16, 4) == [0] * 4
    with pytest.raises(ValueError, match="count"):
        cover_clip_starts(10, 4, -1)


def _clip_module(root, **kw):
    return VideoDataModule(root=str(root), modalities=["rgb"], sampling="clip", new_length=4,
                           clip_stride=2, size=32, num_workers=0, cache=True, **kw)  # fmt: skip


def test_multi_clip_test_samples_cover_the_video(root):
    dm = _clip_module(root, test_clips=0)
    ds = dm.dataset("test", train=False)
    assert isinstance(ds, MultiClipDataset)
    video = ds.video(0)
    frames = ds.frames(video, None)
    n = video.num_frames()  # 16 frames, clips span 7: starts 0, 7, 9
    assert n == SPEC.frames and [f[0] for f in frames] == [0, 7, 9]
    assert frames[-1][-1] == n - 1 and frames[0][0] == 0
    x, y = ds[0]
    assert x.shape == (3, 3, 4, 32, 32)  # (S clips, C, K, H, W)
    # Without test_clips: the one centred clip, as before.
    assert _clip_module(root).dataset("test", train=False).frames(video, None) == [[4, 6, 8, 10]]
    with pytest.raises(ValueError, match="sampling='clip'"):
        MultiClipDataset(ds.items, ds.root, ["rgb"], sampling="tsn")


def test_evaluate_averages_a_clip_model_over_its_clips(root, tmp_path):
    dm = _clip_module(root)
    torch.manual_seed(0)
    model = ActionClassifier("resnet3d", num_classes=3, in_channels=3,
                             backbone_kwargs={"depth": 10, "width": 0.125}).eval()  # fmt: skip
    path = tmp_path / "clip.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "datamodule_hyper_parameters": dict(dm.hparams),
                "mvaccel_module": "mvaccel.train.modules.ActionClassifier"}, path)  # fmt: skip
    r = evaluate(path, clips=3, progress=False)
    assert r["clips"] == 3
    ds = dm.dataset("test", train=False, test_clips=3)
    with torch.no_grad():
        want = torch.stack([model.net(ds[i][0]).mean(0) for i in range(len(ds))]).numpy()
        one = torch.stack([model.net(ds[i][0][1:2]).mean(0) for i in range(len(ds))]).numpy()
    np.testing.assert_allclose(r["scores"], want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(want, one)  # the clips differ: averaging is not one clip's score
