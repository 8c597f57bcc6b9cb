"""Turn a user's upload into the model's input, or refuse it with one sentence."""
from __future__ import annotations

import io

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000


class ImageInputError(ValueError):
    """An upload that cannot be used, with the reason in one sentence."""


def prepare_image(data: bytes, in_channels: int, size: int, mean, std) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode, convert to the model's channels, resize and normalise an uploaded image.

    Returns (normalised (1, C, size, size) tensor, displayable [0, 1] tensor, notes about conversions).
    """
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageInputError(f"The file is {len(data) / 2**20:.0f} MB; upload an image under "
                              f"{MAX_UPLOAD_BYTES // 2**20} MB.")
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_PIXELS:
            raise ImageInputError(f"The image is {image.width}x{image.height} pixels; upload one under "
                                  f"{MAX_PIXELS // 1_000_000} megapixels.")
        image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError):
        raise ImageInputError("The file is not an image that can be read; upload a PNG or JPEG.") from None
    notes = []
    target_mode = "L" if in_channels == 1 else "RGB"
    if image.mode != target_mode:
        if image.mode in ("RGBA", "LA", "P") and target_mode == "RGB":
            background = Image.new("RGB", image.size, "white")
            rgba = image.convert("RGBA")
            background.paste(rgba, mask=rgba.getchannel("A"))
            image = background
        else:
            image = image.convert(target_mode)
        notes.append(f"Converted from {Image.open(io.BytesIO(data)).mode} to {target_mode}.")
    if image.size != (size, size):
        notes.append(f"Resized from {image.width}x{image.height} to {size}x{size}.")
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    shown = TF.to_dtype(TF.to_image(image), torch.float32, scale=True)
    x = TF.normalize(shown, list(mean)[:in_channels], list(std)[:in_channels])
    return x[None], shown, notes
