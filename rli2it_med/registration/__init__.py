"""Step-wise deformable registration: environment, composition, rewards, losses, metrics, training."""

from rli2it_med.registration.data import Pair, PairDataset
from rli2it_med.registration.env import EnvConfig, RegistrationEnv
from rli2it_med.registration.grid import downsample_image, downsample_labels, upsample_field
from rli2it_med.registration.losses import LocalNCC, RegistrationLoss, smoothness_loss
from rli2it_med.registration.metrics import dice_per_label, folding_percent, hd95_per_label, jacobian_determinant
from rli2it_med.registration.warp import compose, warp

__all__ = [
    "EnvConfig",
    "LocalNCC",
    "Pair",
    "PairDataset",
    "RegistrationEnv",
    "RegistrationLoss",
    "compose",
    "dice_per_label",
    "downsample_image",
    "downsample_labels",
    "folding_percent",
    "hd95_per_label",
    "jacobian_determinant",
    "smoothness_loss",
    "upsample_field",
    "warp",
]
