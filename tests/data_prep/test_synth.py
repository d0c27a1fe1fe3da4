import hashlib

import numpy as np
import pytest

from data_prep.synth import main
from rli2it_med.registration.data import PairDataset


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    args = ["--n-train", "3", "--n-val", "0", "--n-test", "0", "--p-template", "0"]
    for name, extra in (("a", []), ("b", []), ("c", ["--seed", "1"])):
        main([*args, *extra, "--out", str(root / name)])
    return root


def test_same_seed_gives_identical_files(built):
    assert digest(built / "a") == digest(built / "b")
    assert digest(built / "a")["train.npz"] != digest(built / "c")["train.npz"]


def test_subjects_are_tissue_labelled_images_of_random_contrast(built):
    pairs = PairDataset.load(built / "a", "train", "subject")
    assert pairs.spatial_shape == (96, 112, 96) and len(pairs) == 3
    corr = []
    for i in range(3):
        p = pairs.get([i])
        img, seg = p.fixed[0, 0].numpy(), p.fixed_seg[0, 0].numpy()
        assert img.min() >= 0 and img.max() <= 1 and set(np.unique(seg)) == {0, 1, 2, 3}
        # drawn from labels with random intensities: the tissues need not keep T1's order (CSF < GM < WM)
        means = [img[seg == t].mean() for t in (1, 2, 3)]
        corr.append(np.corrcoef(means, [1, 2, 3])[0, 1])
        assert not np.array_equal(p.fixed.numpy(), p.moving.numpy())
    assert np.ptp(corr) > 0.3  # contrasts differ between subjects


def test_probabilities_are_checked(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--p-skull", "1.5"])
    assert "--p-skull must be in [0, 1]" in capsys.readouterr().err


def test_2d_subjects_are_drawn_around_their_slice(tmp_path):
    main(["--dim", "2", "--n-train", "4", "--n-val", "0", "--n-test", "0", "--out", str(tmp_path)])
    z = np.load(tmp_path / "train.npz")
    atlases = len(z["images"]) - 4
    assert z["images"].shape[1:] == (128, 128) and atlases == 32
    subjects, atlas_of = z["pairs_template"].T
    assert list(subjects) == list(range(atlases, atlases + 4)) and (atlas_of < atlases).all()
    for s, a in zip(subjects, atlas_of):  # a subject's tissue overlaps its own slice's more than a far slice's
        own = np.mean(z["labels"][s] == z["labels"][a])
        far = np.mean(z["labels"][s] == z["labels"][(a + 16) % atlases])
        assert own > far
    pairs = PairDataset.load(tmp_path, "train", "template")
    assert pairs.spatial_shape == (128, 128) and len(pairs) == 4
