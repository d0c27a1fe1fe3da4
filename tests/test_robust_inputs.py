"""Inputs unlike the training data: units, large rotations, another contrast (rli2it_med.clinical)."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from rli2it_med import clinical
from rli2it_med.api import Registrator, StepwiseRegistrationNet
from rli2it_med.registration.metrics import jacobian_determinant
from rli2it_med.registration.synthetic import demo_pair

BUNDLE = "bundles/brain_mri_rl_registration/models/model.pt"


def template_3d() -> sitk.Image:
    pair = demo_pair(3)
    return clinical._from_array_and_affine(pair["moving"], pair["affine"])


@pytest.mark.parametrize("scale, offset, dtype", [(3000.0, 500.0, np.int16), (0.01, -2.0, np.float32),
                                                  (255.0, 0.0, np.uint8)])  # fmt: skip
def test_normalised_intensities_do_not_depend_on_units(scale, offset, dtype):
    img = template_3d()
    a = sitk.GetArrayFromImage(img)
    other = sitk.GetImageFromArray(np.round(a * scale + offset).astype(dtype) if dtype != np.float32
                                   else (a * scale + offset).astype(dtype))  # fmt: skip
    other.CopyInformation(img)
    ref = sitk.GetArrayFromImage(clinical.normalise_intensity(img))
    got = sitk.GetArrayFromImage(clinical.normalise_intensity(other))
    assert got.dtype == np.float32 and got.min() == 0.0
    quantum = 1.0 / (scale * np.percentile(a[a > 0], 99.5)) if dtype != np.float32 else 1e-5  # integer rounding
    np.testing.assert_allclose(got, ref, atol=2 * quantum + 1e-5)
    assert other.GetOrigin() == img.GetOrigin() and other.GetDirection() == img.GetDirection()


def test_training_scaled_images_are_left_as_they_are_and_constant_ones_become_zero():
    img = template_3d()  # background 0, 99.5th percentile of the brain 1: the training data's scale
    a, got = sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(clinical.normalise_intensity(img))
    np.testing.assert_allclose(got, a, atol=0.02)
    flat = sitk.Image(8, 8, 8, sitk.sitkInt16) + 7
    assert sitk.GetArrayFromImage(clinical.normalise_intensity(flat)).max() == 0.0


def rotation_angle_deg(matrix: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(matrix) - 1) / 2, -1, 1))))


@pytest.mark.parametrize("angle", [30.0, -30.0])
def test_prealignment_recovers_a_30_degree_head_turn(angle):
    """Moving = the template turned about the left-right axis in its voxel data (header unchanged) and shifted
    30 mm; the recovered affine's rotation must be that turn to a few degrees. From the centred start alone, the rigid
    fit stops in a local optimum for such turns (the robustness bench's rot30 case: Dice 0.67 vs 0.73 unturned)."""
    fixed = template_3d()
    centre = fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()])
    turn = sitk.Euler3DTransform()
    turn.SetCenter(centre)
    turn.SetRotation(np.radians(angle), 0.0, 0.0)
    turn.SetTranslation((0.0, 30.0, 0.0))
    moving = sitk.Resample(fixed, fixed, turn.GetInverse(), sitk.sitkLinear, 0.0)  # moving(p) = fixed(turn^-1 p)
    pre = clinical.affine_prealign(fixed, moving)  # maps fixed points to moving points: ~ turn
    u, _, vt = np.linalg.svd(np.asarray(pre.GetMatrix()).reshape(3, 3))
    got = u @ vt  # the affine's rotation (its polar factor)
    want = np.asarray(turn.GetMatrix()).reshape(3, 3)
    assert rotation_angle_deg(got.T @ want) < 4.0, (got, want)
    p = np.asarray(centre) + np.array([20.0, -10.0, 15.0])
    assert np.linalg.norm(np.asarray(pre.TransformPoint(tuple(p))) - turn.TransformPoint(tuple(p))) < 3.0


def test_the_rotation_search_keeps_one_start_for_an_aligned_pair():
    fixed = clinical._at_spacing(template_3d(), clinical.AFFINE_SPACING)
    centred = sitk.CenteredTransformInitializer(
        fixed, fixed, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    starts = clinical.rotation_starts(fixed, fixed, centred)
    assert len(starts) == 1 and np.allclose(starts[0].GetMatrix(), np.eye(3).ravel())


def brain_slab(rng):
    """A smooth 3-class 'brain' (values 0.3 / 0.6 / 1.0 inside a ball, 0 outside) with noise, 32^3."""
    z, y, x = np.mgrid[:32, :32, :32] - 15.5
    r = np.sqrt(x**2 + y**2 + z**2)
    t1 = np.where(r < 13, np.where(r < 5, 0.3, np.where(x > 0, 1.0, 0.6)), 0.0)
    return np.clip(t1 + rng.normal(0, 0.02, t1.shape), 0, None).astype(np.float32), r < 13


def test_map_contrast_turns_an_inverted_contrast_back():
    rng = np.random.default_rng(0)
    t1, brain = brain_slab(rng)
    t2 = np.where(brain, 1.1 - t1, 0.0).astype(np.float32)  # CSF-like centre bright, 'white matter' dark
    mapped = clinical.map_contrast(t1, t2)
    assert mapped.shape == t2.shape and mapped.dtype == np.float32
    assert np.abs(mapped - t1)[brain].mean() < 0.05  # back to the fixed contrast
    assert np.corrcoef(t1[brain], t2[brain])[0, 1] < -0.9 and np.corrcoef(t1[brain], mapped[brain])[0, 1] > 0.9


def test_other_contrast_tells_an_inverted_pair_from_a_same_contrast_pair():
    rng = np.random.default_rng(1)
    t1, brain = brain_slab(rng)
    same = np.clip(0.9 * t1 + rng.normal(0, 0.03, t1.shape), 0, None).astype(np.float32)
    inverted = np.where(brain, 1.1 - t1, 0.0).astype(np.float32)
    assert not clinical.other_contrast(t1, same)
    assert clinical.other_contrast(t1, inverted)


def test_a_bad_contrast_option_lists_the_valid_ones():
    img = template_3d()
    net = clinical.load_network(None, 3)
    with pytest.raises(ValueError, match="auto, map, same"):
        clinical.register_images(img, img, net, contrast="t2")


def test_the_checkpoint_records_the_refinement_smoothness(tmp_path):
    net = StepwiseRegistrationNet.from_checkpoint(BUNDLE)
    payload = torch.load(BUNDLE, map_location="cpu", weights_only=False)
    recorded, trained = payload["val"]["refine_smooth_weight"], payload["config"]["loss"]["smooth_weight"]
    assert net.refine_smooth_weight == recorded != trained
    assert net.refine_loss.kernel_size == payload["config"]["loss"]["kernel_size"]  # the rest is training's loss
    with pytest.raises(ValueError, match="refine_smooth_weight"):
        net.refine_smooth_weight = -1.0


def _folded_start(shape: tuple[int, ...]) -> torch.Tensor:
    """A field on ``shape`` whose bump (8 voxels along axis 0, 3 voxels wide) folds the middle of the grid."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij"))
    centre = torch.tensor([(s - 1) / 2 for s in shape]).view(-1, *[1] * len(shape))
    bump = torch.exp(-((grid - centre) ** 2).sum(0) / (2 * 3.0**2))
    field = torch.zeros(1, len(shape), *shape)
    field[0, 0] = 8.0 * bump
    return field


@pytest.mark.parametrize("weight, unfolds", [(0.0, False), (100.0, True)])
def test_the_fold_barrier_unfolds_the_start_field(weight, unfolds):
    torch.manual_seed(0)
    net = StepwiseRegistrationNet({"spatial_dims": 2, "channels": [4, 8], "critic_channels": [4, 8]}, grid_scale=2)
    net.refine_loss = type(net.refine_loss)(kernel_size=5, smooth_weight=0.0)  # no smoothness: the barrier alone
    net.refine_fold_weight = weight
    image = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 32, 32), 3, 1, 1)
    start = _folded_start((32, 32))
    assert (jacobian_determinant(start) <= 0).sum() > 10
    field = net.refine_field(image, image, start, 40, 20)
    folded = int((jacobian_determinant(field) <= 0).sum())
    assert (folded == 0) == unfolds, folded
    with pytest.raises(ValueError, match="refine_fold_weight"):
        net.refine_fold_weight = -1.0


def test_every_way_of_loading_the_bundle_keeps_its_fold_barrier():
    recorded = torch.load(BUNDLE, map_location="cpu", weights_only=False)["val"]["refine_fold_weight"]
    assert recorded > 0
    fresh = StepwiseRegistrationNet.from_checkpoint(BUNDLE)
    built = StepwiseRegistrationNet(fresh.agent.config, grid_scale=fresh.grid_scale).load_weights(BUNDLE)  # bundles
    for net in (fresh, Registrator.load(BUNDLE, "cpu").net, built, clinical.load_network(None, 3)):
        assert net.refine_fold_weight == recorded
        assert net.refine_smooth_weight == fresh.refine_smooth_weight
