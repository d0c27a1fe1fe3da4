import numpy as np
import pytest
import torch

from rli2it_med import io
from rli2it_med.registration.data import PairDataset
from tests.conftest import save_nifti


def test_shards_split_the_pairs_without_overlap():
    images = np.random.default_rng(0).random((6, 8, 8)).astype(np.float32)
    pairs = np.array([[i, (i + 1) % 6] for i in range(5)])
    data = PairDataset(images, None, pairs)
    shards = [data.shard(r, 2) for r in range(2)]
    assert [len(s) for s in shards] == [3, 2]
    got = sorted(tuple(p) for s in shards for p in s.pairs.tolist())
    assert got == sorted(tuple(p) for p in pairs.tolist())
    assert shards[1].images is data.images  # the pool is shared, not copied
    with pytest.raises(ValueError, match="cannot be shared"):
        data.shard(0, 6)


def test_datalist_of_nifti_files(tmp_path):
    rng = np.random.default_rng(1)
    for name in ("a", "b", "c"):
        save_nifti(tmp_path / f"{name}.nii.gz", rng.random((10, 12, 8)) * 500, np.diag([2, 2, 2, 1]))
        save_nifti(tmp_path / f"{name}_seg.nii.gz", rng.integers(0, 3, (10, 12, 8)).astype(np.int16), np.eye(4))
    entry = lambda f, m: {"fixed_image": f"{f}.nii.gz", "moving_image": f"{m}.nii.gz",  # noqa: E731
                          "fixed_label": f"{f}_seg.nii.gz", "moving_label": f"{m}_seg.nii.gz"}  # fmt: skip
    io.save_json(tmp_path / "datalist.json", {"training": [entry("a", "b"), entry("c", "b")]})
    data = PairDataset.from_datalist(tmp_path / "datalist.json")
    assert len(data) == 2 and data.images.shape == (3, 1, 10, 12, 8)  # b is read once
    assert data.pairs.tolist() == [[0, 1], [2, 1]]
    assert data.label_values == (1, 2) and data.spacing == (2.0, 2.0, 2.0)
    assert 0.0 <= float(data.images.min()) and float(data.images.max()) <= 1.0

    save_nifti(tmp_path / "d.nii.gz", rng.random((10, 12, 9)), np.eye(4))
    io.save_json(tmp_path / "bad.json", {"training": [{"fixed_image": "a.nii.gz", "moving_image": "d.nii.gz"}]})
    with pytest.raises(ValueError, match="d.nii.gz"):
        PairDataset.from_datalist(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="no 'validation'"):
        PairDataset.from_datalist(tmp_path / "datalist.json", "validation")


@pytest.mark.parametrize(("top", "kept"), [(3, torch.uint8), (2035, torch.int16), (70000, torch.int32)])
def test_label_pool_is_compact_and_batches_are_int64(top, kept):
    images = np.random.default_rng(2).random((3, 8, 8)).astype(np.float32)
    labels = np.zeros((3, 8, 8), dtype=np.int64)
    labels[:, 2:6, 2:6] = top
    data = PairDataset(images, labels, np.array([[0, 1], [2, 1]]), (top,))
    assert data.labels.dtype == kept  # 3D brain labels: an eighth of the memory int64 takes
    batch = data.get([0, 1])
    assert batch.fixed_seg.dtype == torch.int64 and batch.moving_seg.dtype == torch.int64
    assert np.array_equal(batch.fixed_seg[:, 0].numpy(), labels[[0, 2]])
    assert data.coarsen(2).labels.dtype == kept
