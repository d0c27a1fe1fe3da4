import numpy as np

from rli2it_med.registration import synthetic


def test_the_template_is_built_once_then_read_from_the_cache(tmp_path, monkeypatch):
    calls = []
    build = synthetic._template_from_nilearn
    monkeypatch.setattr(synthetic, "_template_from_nilearn", lambda: calls.append(1) or build())
    monkeypatch.setenv("RLI2IT_CACHE", str(tmp_path))

    built = synthetic.load_template()
    (cache,) = (tmp_path / "templates").iterdir()
    cached = synthetic.load_template()
    assert len(calls) == 1  # the second call read the file
    for a, b in zip(built, cached):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert built[0].shape == synthetic.SHAPE_3D and set(np.unique(built[1])) == {0, 1, 2, 3}

    cache.write_bytes(b"truncated")  # a damaged cache is built again and rewritten
    np.testing.assert_array_equal(synthetic.load_template()[0], built[0])
    assert len(calls) == 2 and cache.stat().st_size > 1000

    blocked = tmp_path / "a_file"
    blocked.write_text("")  # a cache folder that cannot be made: built each time, nothing fails
    monkeypatch.setenv("RLI2IT_CACHE", str(blocked))
    np.testing.assert_array_equal(synthetic.load_template()[1], built[1])
    assert len(calls) == 3


def test_the_demo_subject_is_built_once_then_read_from_the_cache(tmp_path, monkeypatch):
    calls = []
    build = synthetic.make_subject
    monkeypatch.setattr(synthetic, "make_subject", lambda *a, **k: calls.append(1) or build(*a, **k))
    monkeypatch.setenv("RLI2IT_CACHE", str(tmp_path))

    built = synthetic.demo_pair(2)
    cached = synthetic.demo_pair(2)
    assert len(calls) == 1  # the second call read the subject from the file
    assert built.keys() == cached.keys()
    for key in ("fixed", "moving", "fixed_seg", "moving_seg", "affine"):
        assert built[key].dtype == cached[key].dtype
        np.testing.assert_array_equal(built[key], cached[key])
    assert built["fixed"].shape == synthetic.SHAPE_2D and not np.array_equal(built["fixed"], built["moving"])
    names = sorted(p.name for p in (tmp_path / "templates").iterdir())
    assert len(names) == 2 and names[0].startswith("demo_2d_seed20261124_icbm152_")  # beside the template

    synthetic.demo_pair(2, seed=1)  # another seed is another subject
    assert len(calls) == 2

    demo = tmp_path / "templates" / names[0]
    np.savez(demo, fixed=built["fixed"])  # a cache file without every array is built again
    np.testing.assert_array_equal(synthetic.demo_pair(2)["fixed_seg"], built["fixed_seg"])
    assert len(calls) == 3


def test_the_fast_deformation_lands_points_where_the_exact_one_does():
    import torch

    from rli2it_med.registration.metrics import jacobian_determinant

    for shape, control_points in (((96, 112, 96), 5), ((128, 128), 6)):
        exact = synthetic.random_deformation(shape, torch.Generator().manual_seed(3), 3.0, control_points)
        again = synthetic.random_deformation(shape, torch.Generator().manual_seed(3), 3.0, control_points)
        fast = synthetic.random_deformation(shape, torch.Generator().manual_seed(3), 3.0, control_points, fast=True)
        assert torch.equal(exact, again) and exact.dtype == fast.dtype == torch.float64
        gap = (fast - exact).norm(dim=1)
        assert exact.norm(dim=1).max() > 5  # displacements of several voxels
        assert gap.max() < 0.6 and gap.mean() < 0.03  # measured 0.47 / 0.022 (3D), 0.31 / 0.016 (2D)
        assert (jacobian_determinant(fast) > 0).all()  # still a diffeomorphism
