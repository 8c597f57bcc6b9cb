"""Turn a user's upload into the model's input, or refuse it with one sentence.

An upload can be anything a user has on disk: a photo with an EXIF rotation, a PNG with
transparency, a palette GIF, a 16-bit scan, a float TIFF out of a microscope. Each is brought
to [0, 1] floats the way its pixel format means them (by bit depth, or by value range where the
format has none), composited on white, matched to the model's channels and resized the way the
evaluation transform resizes, with a note for every step a user would not expect. Anything that
cannot be used is refused with an ``ImageInputError`` whose message is one sentence the page can
show as it is.
"""
from __future__ import annotations

import io
import re
import struct
import warnings
import zlib

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps
from torchvision.transforms.v2 import functional as TF

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000

# What Pillow's decoders raise on a malformed file; none of these is a bug in the caller.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
                  struct.error, zlib.error)
_PILLOW_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, what Pillow's "L" uses
_PLAIN_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX"}


class ImageInputError(ValueError):
    """An upload that cannot be used, with the reason in one sentence."""


def prepare_image(data: bytes, in_channels: int, size: int, mean, std) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode, convert to the model's channels, resize and normalise an uploaded image.

    Returns (normalised (1, C, size, size) tensor, displayable [0, 1] (C, size, size) tensor,
    notes about conversions). Raises ``ImageInputError`` with one sentence for an upload that
    cannot be used.
    """
    if in_channels not in (1, 3):
        raise ValueError(f"prepare_image makes 1- or 3-channel inputs, not {in_channels}.")
    _check_file(data)
    notes: list[str] = []
    image, low, span = _plain(_decode(data, size, notes), notes)
    image = _fit(image, size, notes)
    pixels = np.clip((np.array(image, dtype=np.float32) - low) / span, 0.0, 1.0)
    pixels = _match_channels(pixels[..., None] if pixels.ndim == 2 else pixels, in_channels, notes)
    shown = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
    x = TF.normalize(shown, list(mean)[:in_channels], list(std)[:in_channels])
    return x[None], shown, notes


def _check_file(data: bytes) -> None:
    """Refuse what needs no decoding to refuse, before Pillow spends time on it."""
    if not data:
        raise ImageInputError("The file is empty; upload an image file.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageInputError(f"The file is {len(data) / 2**20:.1f} MB; upload an image under "
                              f"{MAX_UPLOAD_BYTES // 2**20} MB.")


def _decode(data: bytes, size: int, notes: list[str]) -> Image.Image:
    """Open, size-check (as uploaded and as resized to ``size``) and load the first frame, turned upright.

    Pillow's warnings are silenced here because they would reach the server log or the page
    (a corrupt EXIF block, say, is harmless), except its decompression-bomb warning, which is
    made an error so that it becomes the same one sentence as every other over-large image.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise _pillow_bomb(error) from None
        except _DECODE_ERRORS:
            raise ImageInputError("The file is not an image that can be read; upload a PNG, JPEG, GIF, "
                                  "BMP, TIFF or WebP image.") from None
        _check_pixels(*image.size, size)
        try:
            return _load_first_frame(image, notes)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise _pillow_bomb(error) from None
        except _DECODE_ERRORS:
            raise ImageInputError("The image data ends early or is damaged; upload the complete file "
                                  "again.") from None


def _check_pixels(width: int, height: int, size: int) -> None:
    """Refuse an image by its declared size, which Pillow reads from the header without decoding, and by
    the size it would have once resized to the model's ``size``.

    The resize keeps the aspect ratio, so a long thin image under the limit as uploaded (a 39,999,999x1
    strip) would become 32 pixels by 1.28 billion before the crop: the limit holds on both sizes.
    """
    if width * height > MAX_PIXELS:
        raise ImageInputError(f"The image is {width}x{height} pixels ({width * height / 1e6:.3g} megapixels); "
                              f"upload one under {MAX_PIXELS / 1e6:g} megapixels.")
    resized = _resized((width, height), size)
    if resized[0] * resized[1] > MAX_PIXELS:
        raise ImageInputError(f"The image is {width}x{height} pixels, too long and thin: resized to the model's "
                              f"{size}-pixel side it would be {resized[0]}x{resized[1]}; upload one whose longer "
                              f"side is at most {MAX_PIXELS // (size * size):,} times its shorter side.")


def _pillow_bomb(error: Exception) -> ImageInputError:
    """The sentence for an image Pillow itself refused as a decompression bomb.

    Pillow refuses at open, before the size can be read, or while loading a frame or tile that
    is larger than the image; its message holds the pixel count but not the width and height.
    """
    found = _PILLOW_BOMB_PIXELS.search(str(error))
    amount = f"is {int(found[1]) / 1e6:.3g} megapixels" if found else "has too many pixels"
    return ImageInputError(f"The image {amount}; upload one under {MAX_PIXELS / 1e6:g} megapixels.")


def _load_first_frame(image: Image.Image, notes: list[str]) -> Image.Image:
    """Decode the first frame (or an icon's largest size) and apply the EXIF orientation.

    Browsers show a photo upright by its EXIF orientation tag, so the model must see it that
    way too; the pixels are stored sideways in most phone photos.
    """
    frames = getattr(image, "n_frames", 1)
    if frames > 1:  # counting the frames seeks back to the first
        notes.append(f"The file holds {frames} frames; the first one is used.")
    sizes = image.info.get("sizes", ()) if image.format in ("ICO", "ICNS") else ()
    if len(sizes) > 1:
        notes.append(f"The icon holds {len(sizes)} sizes; the largest, {image.width}x{image.height}, is used.")
    image.load()
    if image.getexif().get(ExifTags.Base.Orientation, 1) in range(2, 9):
        notes.append("Turned upright as the photo's EXIF orientation tag says.")
    return ImageOps.exif_transpose(image)


def _plain(image: Image.Image, notes: list[str]) -> tuple[Image.Image, float, float]:
    """Bring any Pillow mode to L, RGB, I or F, with the (low, span) that maps it to [0, 1].

    8-bit formats span 255 and 16-bit ones 65535 (their bit depth); 32-bit integer and float
    images carry no bit depth, so their value range decides (``_value_range``). Palette and 1-bit
    images become L or RGB, a palette entry or colour key marked transparent becomes alpha, alpha
    is composited on white, and other colour spaces (CMYK, YCbCr, LAB) become RGB with a note.
    """
    if image.mode.startswith("I;16"):
        notes.append("Read as a 16-bit image: its values 0-65535 were scaled to [0, 1].")
        return image.convert("I"), 0.0, 65535.0
    if image.mode in ("I", "F"):
        return image, *_value_range(image, notes)
    grey = image.mode in ("1", "L", "LA", "La")
    alpha = image.mode.endswith(("A", "a")) or "transparency" in image.info  # LA, PA, RGBA, La, RGBa
    target = ("L" if grey else "RGB") + ("A" if alpha else "")
    if image.mode not in _PLAIN_MODES:
        notes.append(f"Converted from {image.mode} to {target}.")
    image = image if image.mode == target else image.convert(target)
    return (_on_white(image, notes) if alpha else image), 0.0, 255.0


def _value_range(image: Image.Image, notes: list[str]) -> tuple[float, float]:
    """The (low, span) of an I or F image: as it is when it lies in [0, 1], else min-max.

    A float image in [0, 1] is the common case (a saved tensor) and must not be stretched; any
    other range has no agreed meaning, so the darkest pixel becomes black and the brightest
    white. A constant image outside [0, 1] is left to the final clip.
    """
    values = np.asarray(image)
    if not np.isfinite(values).all():
        raise ImageInputError("The image holds NaN or infinite values; upload one whose pixels are all finite "
                              "numbers.")
    low, high = float(values.min()), float(values.max())
    if 0.0 <= low and high <= 1.0:
        return 0.0, 1.0
    if high > low:
        notes.append(f"Its values ran from {low:.7g} to {high:.7g}; they were scaled to [0, 1].")
        return low, high - low
    notes.append(f"Every pixel has the value {low:.7g}; it was clipped to {min(max(low, 0.0), 1.0):g}.")
    return 0.0, 1.0


def _on_white(image: Image.Image, notes: list[str]) -> Image.Image:
    """Composite an LA or RGBA image on white, the background the page shows images on."""
    alpha = image.getchannel("A")
    if alpha.getextrema()[0] < 255:
        notes.append("Its transparent parts were composited on white.")
    background = Image.new(image.mode[:-1], image.size, "white")
    background.paste(image.convert(background.mode), mask=alpha)
    return background


def _match_channels(pixels: np.ndarray, in_channels: int, notes: list[str]) -> np.ndarray:
    """Copy greyscale into three channels, or reduce colour to luminance, as the model needs."""
    if pixels.shape[-1] == in_channels:
        return pixels
    if in_channels == 3:
        notes.append("The greyscale image was copied into all 3 colour channels.")
        return np.repeat(pixels, 3, axis=-1)
    notes.append("The colour image was converted to greyscale (luminance) for this 1-channel model.")
    return pixels @ _LUMA[:, None]


def _fit(image: Image.Image, size: int, notes: list[str]) -> Image.Image:
    """Resize the shorter side to ``size`` and centre-crop, as the evaluation transforms do.

    Sizes and crop offsets follow torchvision's ``Resize(size)`` and ``CenterCrop(size)``, and
    Pillow's antialiased bilinear filter is the one torchvision's was ported from, so the input
    matches what the evaluation transform makes of the same picture. Resizing before the pixels
    become floats keeps a 40-megapixel photo from taking half a gigabyte.
    """
    original = image.size
    resized = _resized(original, size)
    if original != resized:
        image = image.resize(resized, Image.Resampling.BILINEAR)
    if resized != (size, size):
        left, top = int(round((resized[0] - size) / 2.0)), int(round((resized[1] - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
    if original != (size, size):
        notes.append(_fit_note(original, resized, size))
    return image


def _resized(original: tuple[int, int], size: int) -> tuple[int, int]:
    """(width, height) after ``Resize(size)``: the shorter side becomes ``size``, the ratio is kept."""
    width, height = original
    short, long = sorted(original)
    return (size, int(size * long / short)) if width <= height else (int(size * long / short), size)


def _fit_note(original: tuple[int, int], resized: tuple[int, int], size: int) -> str:
    """Say how the image was brought to the model's size, naming the crop when there was one."""
    width, height = original
    if width == height:
        return f"Resized from {width}x{height} to {size}x{size}."
    if original == resized:
        return f"Centre-cropped from {width}x{height} to {size}x{size}."
    return (f"Resized from {width}x{height} to {resized[0]}x{resized[1]} and centre-cropped to {size}x{size}, "
            "as the model's evaluation transform does.")
