"""Image files <-> float32 RGB arrays, and arrays <-> CHW tensors.

In memory an image is a numpy ``float32`` array ``H x W x 3``, RGB, values in [0, 1]. Files are decoded
with OpenCV (grey, RGBA, palette and 16-bit files included) and always carry 8-bit semantics: every
value read is ``k / 255`` for an integer ``k``, the same as the data sets (8-bit RGB) and the metrics
(computed on 8-bit images) the models are trained and scored on.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch

from ..utils import atomic_write_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_JPEG_QUALITY = 95
_WRITE_PARAMS = {".png": [], ".jpg": [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY],
                 ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]}


def read_image_uint8(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 ``H x W x 3`` RGB (the decoding behind ``read_image``).

    Grey images are repeated to 3 channels, alpha is dropped, 16-bit files are rounded to 8-bit
    levels, EXIF orientation is applied.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist or is not a file")
    # ANYDEPTH keeps 16-bit data for the exact rounding below; ANYCOLOR drops alpha and keeps grey as
    # one channel; unlike IMREAD_UNCHANGED both still apply the EXIF orientation.
    data = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if data is None:
        raise ValueError(f"cannot decode image {path}; it is corrupt or not an image format OpenCV reads")
    if data.dtype == np.uint16:
        data = np.round(data / 257.0).astype(np.uint8)   # 65535 / 255 = 257: 8-bit level of each value
    elif data.dtype != np.uint8:
        raise ValueError(f"image {path} has {data.dtype} pixels; only 8- and 16-bit images are supported")
    if data.ndim == 2:
        return cv2.cvtColor(data, cv2.COLOR_GRAY2RGB)
    if data.shape[2] == 4:
        return cv2.cvtColor(data, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(data, cv2.COLOR_BGR2RGB)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as float32 ``H x W x 3`` RGB in [0, 1] (see ``read_image_uint8``)."""
    return read_image_uint8(path).astype(np.float32) / 255.0


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a float ``H x W x 3`` RGB (or ``H x W`` grey) image in [0, 1] as PNG or JPEG (by suffix).

    Values are clipped to [0, 1] and rounded to 8 bits. The file is written atomically (a temporary
    file in the same folder, then one rename), so readers never see a half-written image.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _WRITE_PARAMS:
        raise ValueError(f"cannot write {path}: unknown image suffix {path.suffix!r}; use .png, .jpg or .jpeg")
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"cannot write {path}: expected an HxWx3 or HxW image, got shape {image.shape}; "
                         f"convert CHW tensors with edge_derain.data.to_image")
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"cannot write {path}: expected float values in [0, 1], got {image.dtype}; "
                         f"divide 8-bit data by 255")
    if not np.isfinite(image).all():
        raise ValueError(f"cannot write {path}: the image contains NaN or infinite values")
    pixels = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(suffix, pixels, _WRITE_PARAMS[suffix])
    if not ok:
        raise ValueError(f"OpenCV failed to encode {path} as {suffix}")
    atomic_write_bytes(path, encoded.tobytes())
    return path


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly in ``folder`` (suffixes in ``IMAGE_SUFFIXES``), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist or is not a directory")
    # Hidden files are skipped: they include the temporary files of in-progress atomic writes.
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {folder}")
    return files


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` float array -> contiguous ``3 x H x W`` float32 tensor."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"to_tensor expects an HxWx3 image, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"to_tensor expects float values in [0, 1], got {image.dtype}; divide 8-bit data by 255")
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


def to_image(tensor: torch.Tensor) -> np.ndarray:
    """``3 x H x W`` tensor (any device/dtype) -> contiguous ``H x W x 3`` float32 array."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"to_image expects a torch.Tensor, got {type(tensor).__name__}")
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ValueError(f"to_image expects a 3xHxW tensor, got shape {tuple(tensor.shape)}; "
                         f"index a batch first (batch[0])")
    return np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy().transpose(1, 2, 0))
