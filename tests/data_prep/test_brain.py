import hashlib

import numpy as np

from data_prep.brain import main
from rli2it_med.registration.data import PairDataset


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_gives_identical_files(tmp_path):
    args = ["--dim", "2", "--n-train", "3", "--n-val", "2", "--n-test", "2"]
    main([*args, "--out", str(tmp_path / "a")])
    main([*args, "--out", str(tmp_path / "b")])
    main([*args, "--out", str(tmp_path / "c"), "--seed", "1"])
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a")["train.npz"] != digest(tmp_path / "c")["train.npz"]

    pairs = PairDataset.load(tmp_path / "a", "train", "template")
    assert pairs.spatial_shape == (128, 128) and len(pairs) == 3
    p = pairs.get([0])
    assert set(np.unique(p.fixed_seg.numpy())) == {0, 1, 2, 3}  # background, CSF, GM, WM
    assert not np.array_equal(p.fixed.numpy(), p.moving.numpy())  # subject is a deformed atlas
