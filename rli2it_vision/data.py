"""Images for the vision tasks, in (N, C, H, W) float32 in [-1, 1]: the offline faces default and users' folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "FACE_SPLITS",
    "IMAGE_SUFFIXES",
    "image_folder",
    "image_tensor",
    "lfw_faces",
    "load_image",
    "read_image",
    "save_image",
    "folder_split",
    "iter_video",
    "read_video",
    "video_frame_count",
    "to_unit_range",
    "video_fps",
]

FACE_SPLITS = {"train": slice(0, 70), "val": slice(70, 80), "test": slice(80, 100)}  # of lfw_subset's 100 faces
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def to_unit_range(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """[0, 1] intensities -> [-1, 1] float32 tensor."""
    return torch.as_tensor(np.asarray(images), dtype=torch.float32) * 2 - 1


def lfw_faces(split: str = "train", size: int = 64) -> torch.Tensor:
    """The 100 real aligned LFW faces that scikit-image ships (25x25 grey), upsampled (bicubic) to ``size``:
    (N, 1, size, size) in [-1, 1]; a fixed split: the first 70 train, the next 10 validation, the last 20 test."""
    if split not in FACE_SPLITS:
        raise ValueError(f"split must be one of {sorted(FACE_SPLITS)}, got {split!r}")
    from skimage.data import lfw_subset

    faces = torch.as_tensor(lfw_subset()[:100][FACE_SPLITS[split]], dtype=torch.float32).unsqueeze(1)
    faces = F.interpolate(faces, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    return to_unit_range(faces)


def read_image(path: str | Path) -> np.ndarray:
    """One image file as float64 (H, W) grey or (H, W, 3) colour in [0, 1] (alpha dropped); the error names the file
    when it cannot be read."""
    from skimage import io as skio
    from skimage.color import rgba2rgb

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image")
    try:
        image = skio.imread(path)
    except Exception as e:  # noqa: BLE001 - any decoder error, reported with the file
        raise ValueError(f"{path}: not a readable image ({e})") from e
    if image.ndim == 3 and image.shape[-1] == 4:
        image = rgba2rgb(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3) or min(image.shape[:2]) < 2:
        raise ValueError(f"{path}: expected a grey or RGB image, got an array of shape {image.shape}")
    image = np.asarray(image, dtype=np.float64)
    return image / 255.0 if image.max() > 1 else image


def image_tensor(image: np.ndarray, size: int | None, channels: int = 3) -> torch.Tensor:
    """A [0, 1] (H, W) or (H, W, 3) array as a (channels, size, size) tensor in [-1, 1], centre-cropped square and
    resized; ``size=None`` keeps the whole image as it is, (channels, H, W)."""
    from skimage.color import gray2rgb, rgb2gray

    if channels == 1 and image.ndim == 3:
        image = rgb2gray(image)
    elif channels == 3 and image.ndim == 2:
        image = gray2rgb(image)
    h, w = image.shape[:2]
    if size is None:
        t = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32).reshape(h, w, -1).permute(2, 0, 1)
        return to_unit_range(t.clamp(0, 1))
    s = min(h, w)
    image = image[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    t = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32).reshape(s, s, -1).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return to_unit_range(t.clamp(0, 1))


def load_image(path: str | Path, size: int, channels: int = 3) -> torch.Tensor:
    """One image file (:func:`read_image`) as a (channels, size, size) tensor in [-1, 1] (:func:`image_tensor`)."""
    return image_tensor(read_image(path), size, channels)


def save_image(path: str | Path, image: torch.Tensor) -> None:
    """Write a (C, H, W) image in [-1, 1] (C = 1 or 3) as an 8-bit PNG, atomically."""
    from rli2it_med.io import save_png

    pixels = ((image.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0)
    pixels = pixels.numpy()
    save_png(path, pixels[..., 0] if pixels.shape[-1] == 1 else np.ascontiguousarray(pixels))


def image_folder(path: str | Path, size: int, channels: int = 3) -> torch.Tensor:
    """Every image of a folder (CelebA-HQ style, sorted by name) through :func:`load_image`:
    (N, channels, size, size) in [-1, 1]."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of images")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return torch.stack([load_image(f, size, channels) for f in files])


def folder_split(images: torch.Tensor, split: str, name: str = "the folder") -> torch.Tensor:
    """A fixed split of a folder's images (in name order): the last 10 % test, the 10 % before them validation,
    the rest training (at least one image each)."""
    n = len(images)
    n_test = n_val = max(1, n // 10)
    if n - n_test - n_val < 1:
        raise ValueError(f"{name}: {n} images are too few for train / validation / test splits")
    bounds = {"train": (0, n - n_test - n_val), "val": (n - n_test - n_val, n - n_test), "test": (n - n_test, n)}
    if split not in bounds:
        raise ValueError(f"split must be one of {sorted(bounds)}, got {split!r}")
    return images[slice(*bounds[split])]


def iter_video(path: str | Path, max_frames: int | None = None, start: int = 0) -> Iterator[np.ndarray]:
    """The frames of a video file decoded one at a time with OpenCV, as uint8 (H, W, 3) RGB (a long video never sits
    in memory whole); the error names the file when it cannot be opened or holds no frame.

    Args:
        max_frames: at most this many frames (default: all).
        start: the first frame read.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ValueError(f"{path}: OpenCV cannot open this video")
        index = count = 0
        while max_frames is None or count < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            if index >= start:
                count += 1
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()
    if not count:
        raise ValueError(f"{path}: no decodable frame (from frame {start})")


def read_video(path: str | Path, max_frames: int | None = None, start: int = 0) -> np.ndarray:
    """All frames of :func:`iter_video` as one uint8 (N, H, W, 3) array."""
    return np.stack(list(iter_video(path, max_frames, start)))


def video_frame_count(path: str | Path) -> int | None:
    """The number of frames a video file declares (None when it declares none)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        n = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    return n if n > 0 else None


def video_fps(path: str | Path) -> float:
    """Frames per second that a video file declares (25 when it declares none)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()
    return float(fps) if fps and fps > 0 else 25.0
