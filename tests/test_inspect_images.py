"""Uploads on the Inspect page: every kind of image a user may have, and every refusal.

Each image is made in memory with Pillow, encoded the way a file on disk would be, and checked
by its pixel values after ``prepare_image``, not merely by its shape.
"""
import io
import re
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from regnet import inspect as ri
from regnet.data import build_transform

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)


def _encode(image, fmt, **options):
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def _halves(mode, left, right, size=(32, 32)):
    """An image whose left half is one colour and right half another."""
    image = Image.new(mode, size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def _prepare(data, channels=3, size=32):
    return ri.prepare_image(data, channels, size, MEAN[:channels], STD[:channels])


def _rgb(shown, x, y):
    return tuple(round(float(v), 4) for v in shown[:, y, x])


def _refusal(data, match):
    with pytest.raises(ri.ImageInputError, match=match) as caught:
        _prepare(data)
    message = str(caught.value)
    assert message.endswith(".") and not re.search(r"[.!?]\s", message), f"not one sentence: {message!r}"
    error = caught.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)  # no chained traceback
    return message


def _png_header(width, height):
    """A PNG that declares its size and has no pixel data: what a decompression bomb looks like to open."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def _noise(mode, size, seed=0):
    channels = len(Image.new(mode, (1, 1)).getbands())
    values = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(values.squeeze(-1) if channels == 1 else values, mode)


# --- modes -------------------------------------------------------------------------------------

def test_an_rgb_png_keeps_its_pixels_and_is_normalised_with_the_models_mean_and_std():
    x, shown, notes = _prepare(_encode(_halves("RGB", (200, 100, 50), (0, 0, 255)), "PNG"))
    assert x.shape == (1, 3, 32, 32) and shown.shape == (3, 32, 32) and shown.dtype == torch.float32
    assert _rgb(shown, 0, 0) == tuple(round(v / 255, 4) for v in (200, 100, 50))
    assert _rgb(shown, 31, 31) == (0.0, 0.0, 1.0)
    expected = (shown - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    assert torch.allclose(x[0], expected) and notes == []


def test_rgba_is_composited_on_white_with_a_note_and_an_opaque_one_needs_no_note():
    _, shown, notes = _prepare(_encode(_halves("RGBA", (255, 0, 0, 128), (0, 0, 255, 0)), "PNG"))
    a = 128 / 255
    assert _rgb(shown, 0, 0) == (1.0, round(1 - a, 4), round(1 - a, 4))
    assert _rgb(shown, 31, 0) == (1.0, 1.0, 1.0)  # fully transparent is white, whatever its colour
    assert notes == ["Its transparent parts were composited on white."]
    _, shown, notes = _prepare(_encode(Image.new("RGBA", (32, 32), (10, 20, 30, 255)), "PNG"))
    assert _rgb(shown, 5, 5) == tuple(round(v / 255, 4) for v in (10, 20, 30)) and notes == []


@pytest.mark.parametrize("channels", [1, 3])
def test_la_is_composited_on_white(channels):
    _, shown, notes = _prepare(_encode(Image.new("LA", (32, 32), (0, 64)), "PNG"), channels)
    assert shown.shape == (channels, 32, 32)
    assert torch.allclose(shown, torch.full_like(shown, 1 - 64 / 255))
    assert "Its transparent parts were composited on white." in notes


@pytest.mark.parametrize("mode, colour", [("LA", (50, 128)), ("RGBA", (50, 60, 70, 128))])
def test_a_tiff_with_premultiplied_alpha_is_composited_on_white(mode, colour):
    data = _encode(Image.new(mode, (32, 32), colour), "TIFF")
    # Pillow writes unassociated alpha (ExtraSamples = 2); mark it associated (1), as some scanners do.
    extra_samples = struct.pack("<HHII", 338, 3, 1, 2)
    data = data.replace(extra_samples, struct.pack("<HHII", 338, 3, 1, 1))
    assert Image.open(io.BytesIO(data)).tag_v2[338] == (1,)  # Pillow opens it as La, or as RGBA unpremultiplied
    _, shown, notes = _prepare(data)
    # On white, premultiplied colour c with alpha a becomes c + (255 - a).
    expected = torch.tensor([(c + 255 - colour[-1]) / 255 for c in colour[:-1]] * (3 // (len(colour) - 1)))
    assert torch.allclose(shown.mean((1, 2)), expected, atol=1.01 / 255)
    assert "Its transparent parts were composited on white." in notes


def test_a_palette_image_is_read_through_its_palette():
    image = _halves("P", 1, 2)
    image.putpalette([0, 0, 0, 255, 128, 0, 0, 64, 192] + [0] * (253 * 3))
    _, shown, notes = _prepare(_encode(image, "PNG"))
    assert _rgb(shown, 0, 0) == (1.0, round(128 / 255, 4), 0.0)
    assert _rgb(shown, 31, 0) == (0.0, round(64 / 255, 4), round(192 / 255, 4)) and notes == []


def test_a_palette_image_with_a_transparent_entry_shows_white_there():
    image = _halves("P", 1, 2)
    image.putpalette([0, 0, 0, 255, 128, 0, 0, 64, 192] + [0] * (253 * 3))
    _, shown, notes = _prepare(_encode(image, "PNG", transparency=2))
    assert _rgb(shown, 0, 0) == (1.0, round(128 / 255, 4), 0.0)
    assert _rgb(shown, 31, 0) == (1.0, 1.0, 1.0)
    assert notes == ["Its transparent parts were composited on white."]


def test_greyscale_is_replicated_for_a_colour_model_and_kept_for_a_greyscale_one():
    data = _encode(_halves("L", 40, 220), "PNG")
    _, shown, notes = _prepare(data, 3)
    assert _rgb(shown, 0, 0) == (round(40 / 255, 4),) * 3 and _rgb(shown, 31, 0) == (round(220 / 255, 4),) * 3
    assert notes == ["The greyscale image was copied into all 3 colour channels."]
    x, shown, notes = _prepare(data, 1)
    assert x.shape == (1, 1, 32, 32) and notes == []
    assert round(float(shown[0, 0, 0]), 4) == round(40 / 255, 4)
    assert torch.allclose(x, (shown[None] - MEAN[0]) / STD[0])


def test_a_colour_image_becomes_its_luminance_for_a_greyscale_model():
    _, shown, notes = _prepare(_encode(Image.new("RGB", (32, 32), (200, 100, 50)), "PNG"), 1)
    luminance = (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255
    assert shown.shape == (1, 32, 32) and torch.allclose(shown, torch.full_like(shown, luminance))
    assert notes == ["The colour image was converted to greyscale (luminance) for this 1-channel model."]


def test_a_one_bit_image_is_black_and_white():
    image = Image.new("1", (32, 32), 0)
    image.paste(1, (0, 0, 16, 32))
    _, shown, _ = _prepare(_encode(image, "PNG"), 1)
    assert float(shown[0, :, :16].min()) == 1.0 and float(shown[0, :, 16:].max()) == 0.0


def test_a_cmyk_jpeg_is_converted_to_rgb_with_a_note():
    data = _encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    _, shown, notes = _prepare(data)
    assert torch.allclose(shown.mean((1, 2)), torch.tensor([1.0, 0.0, 0.0]), atol=0.02)  # pure red
    assert notes == ["Converted from CMYK to RGB."]


def test_a_lab_tiff_is_converted_to_rgb_with_a_note():
    data = _encode(_halves("LAB", (255, 128, 128), (136, 208, 195)), "TIFF")  # white, sRGB red
    assert Image.open(io.BytesIO(data)).mode == "LAB"
    _, shown, notes = _prepare(data)
    assert torch.allclose(shown[:, :, :16].mean((1, 2)), torch.ones(3), atol=0.01)
    red = shown[:, :, 16:].mean((1, 2))
    assert torch.allclose(red, torch.tensor([1.0, 0.0, 0.0]), atol=0.06), red  # 8-bit L*a*b* is coarse
    assert notes == ["Converted from LAB to RGB."]


@pytest.mark.parametrize("mode, fmt", [("I;16", "PNG"), ("I;16B", "PNG"), ("I;16B", "TIFF")])
def test_a_16_bit_gradient_comes_out_as_a_gradient_scaled_by_its_bit_depth(mode, fmt):
    gradient = np.linspace(0, 65535, 32 * 32).round().astype(np.uint16).reshape(32, 32)
    image = Image.frombytes(mode, (32, 32), gradient.astype(">u2" if mode.endswith("B") else "<u2").tobytes())
    data = _encode(image, fmt)
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    _, shown, notes = _prepare(data, 1)
    assert np.allclose(shown[0].numpy(), gradient / 65535, atol=1e-6)
    assert float(shown.min()) == 0.0 and float(shown.max()) == 1.0 and abs(float(shown.mean()) - 0.5) < 1e-3
    assert notes == ["Read as a 16-bit image: its values 0-65535 were scaled to [0, 1]."]


def test_a_float_tiff_in_zero_to_one_is_used_as_it_is():
    values = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    _, shown, notes = _prepare(_encode(Image.fromarray(values, "F"), "TIFF"), 1)
    assert np.allclose(shown[0].numpy(), values) and notes == []


def test_a_float_tiff_in_another_range_is_min_max_scaled_with_a_note():
    values = np.linspace(-2, 6, 32 * 32, dtype=np.float32).reshape(32, 32)
    _, shown, notes = _prepare(_encode(Image.fromarray(values, "F"), "TIFF"), 3)
    assert np.allclose(shown.numpy(), np.broadcast_to((values + 2) / 8, (3, 32, 32)), atol=1e-6)
    assert notes == ["Its values ran from -2 to 6; they were scaled to [0, 1].",
                     "The greyscale image was copied into all 3 colour channels."]


def test_a_32_bit_integer_tiff_is_scaled_by_its_value_range():
    values = (np.arange(32 * 32, dtype=np.int32).reshape(32, 32) * 1000) + 500
    data = _encode(Image.fromarray(values, "I"), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I"
    _, shown, notes = _prepare(data, 1)
    high = 500 + 1023 * 1000
    assert np.allclose(shown[0].numpy(), (values - 500) / (high - 500), atol=1e-6)
    assert notes == [f"Its values ran from 500 to {high}; they were scaled to [0, 1]."]


def test_a_constant_float_image_outside_zero_to_one_is_clipped_with_a_note():
    _, shown, notes = _prepare(_encode(Image.fromarray(np.full((32, 32), 3.5, np.float32), "F"), "TIFF"), 1)
    assert float(shown.min()) == 1.0 and notes == ["Every pixel has the value 3.5; it was clipped to 1."]


def test_an_animated_gif_uses_its_first_frame_with_a_note():
    frames = [Image.new("RGB", (32, 32), colour) for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    _, shown, notes = _prepare(_encode(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    assert torch.allclose(shown, torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 32, 32))
    assert notes == ["The file holds 3 frames; the first one is used."]


def test_an_icon_uses_its_largest_size_with_a_note():
    image = _halves("RGBA", (255, 0, 0, 255), (0, 0, 255, 255), (64, 64))
    _, shown, notes = _prepare(_encode(image, "ICO", sizes=[(16, 16), (32, 32), (64, 64)]))
    assert _rgb(shown, 0, 0) == (1.0, 0.0, 0.0) and _rgb(shown, 31, 0) == (0.0, 0.0, 1.0)
    assert notes == ["The icon holds 3 sizes; the largest, 64x64, is used.", "Resized from 64x64 to 32x32."]


# --- orientation and size ----------------------------------------------------------------------

def test_a_jpeg_is_turned_upright_by_its_exif_orientation():
    image = _halves("RGB", (255, 0, 0), (0, 0, 255), (32, 16))  # stored sideways: red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    _, shown, notes = _prepare(_encode(image, "JPEG", exif=exif, quality=95), 3, 16)
    # Upright it is 16 wide and 32 tall, red on top; the centre crop keeps rows 8..23.
    assert torch.allclose(shown[:, 1:6].mean((1, 2)), torch.tensor([1.0, 0.0, 0.0]), atol=0.05)
    assert torch.allclose(shown[:, 10:15].mean((1, 2)), torch.tensor([0.0, 0.0, 1.0]), atol=0.05)
    assert notes == ["Turned upright as the photo's EXIF orientation tag says.",
                     "Centre-cropped from 16x32 to 16x16."]


@pytest.mark.parametrize("width, height, note", [
    (60, 40, "Resized from 60x40 to 48x32 and centre-cropped to 32x32, as the model's evaluation transform does."),
    (40, 61, "Resized from 40x61 to 32x48 and centre-cropped to 32x32, as the model's evaluation transform does."),
    (23, 17, "Resized from 23x17 to 43x32 and centre-cropped to 32x32, as the model's evaluation transform does."),
    (1200, 900, "Resized from 1200x900 to 42x32 and centre-cropped to 32x32, as the model's evaluation "
                "transform does."),
])
def test_any_size_is_resized_and_centre_cropped_like_the_evaluation_transform(width, height, note):
    image = _noise("RGB", (width, height))
    x, _, notes = _prepare(_encode(image, "PNG"))
    expected = build_transform("cifar", 32, MEAN, STD, train=False, resize=True)(image)
    # Both resize 8-bit pixels and round; they may differ by one level where the rounding does.
    assert torch.allclose(x[0], expected, atol=1.01 / 255 / min(STD))
    assert notes == [note]


def test_a_small_square_image_is_scaled_up_with_a_note():
    _, shown, notes = _prepare(_encode(Image.new("RGB", (8, 8), (0, 128, 255)), "PNG"))
    assert torch.allclose(shown, torch.tensor([0.0, 128 / 255, 1.0]).view(3, 1, 1).expand(3, 32, 32))
    assert notes == ["Resized from 8x8 to 32x32."]


# --- refusals ----------------------------------------------------------------------------------

def test_an_empty_file_is_refused():
    _refusal(b"", "The file is empty")


def test_a_file_that_is_not_an_image_is_refused():
    _refusal(b"%PDF-1.4 definitely not a picture", "not an image that can be read")
    _refusal("label,score\ncat,0.9\n".encode(), "not an image that can be read")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_truncated_file_is_refused(fmt):
    data = _encode(_noise("RGB", (64, 64)), fmt)
    _refusal(data[: int(len(data) * 0.6)], "ends early or is damaged")


def test_too_large_a_file_is_refused_before_it_is_decoded():
    message = _refusal(bytes(ri.images.MAX_UPLOAD_BYTES + 1), "upload an image under 20 MB")
    assert message.startswith("The file is 20.0 MB")


@pytest.mark.parametrize("width, height, said", [
    (7000, 7000, "The image is 7000x7000 pixels (49 megapixels)"),  # over MAX_PIXELS only
    (10000, 10000, "The image is 100 megapixels"),  # over Pillow's warning limit
    (20000, 20000, "The image is 400 megapixels"),  # over Pillow's error limit
])
def test_a_decompression_bomb_is_refused_naming_the_pixel_limit_and_nothing_leaks(width, height, said):
    limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        message = _refusal(_png_header(width, height), "upload one under 40 megapixels")
    assert message.startswith(said) and leaked == [] and Image.MAX_IMAGE_PIXELS == limit


def long_thin_png(width: int = 39_999_999) -> bytes:
    """A real greyscale PNG of ``width``x1 black pixels (about 40 KB): under the pixel limit as uploaded."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    packer = zlib.compressobj(9)
    row = packer.compress(b"\0")  # the row's filter byte
    row += b"".join(packer.compress(bytes(1 << 20)) for _ in range(width >> 20))
    row += packer.compress(bytes(width % (1 << 20))) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, 1, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", row) + chunk(b"IEND", b"")


@pytest.mark.parametrize("width, height", [(39_999_999, 1), (1, 39_999_999), (2_000_000, 10)])
def test_a_long_thin_image_is_refused_by_its_resized_size(width, height):
    message = _refusal(_png_header(width, height), "too long and thin")
    assert f"The image is {width}x{height} pixels" in message and "39,062 times its shorter side" in message


def test_the_long_thin_png_upload_is_refused_before_it_is_decoded(monkeypatch):
    data = long_thin_png()
    assert len(data) < 60_000
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded a refused image"))
    _refusal(data, r"resized to the model's 32-pixel side it would be 1279999968x32")


def test_an_image_at_the_aspect_limit_is_used():
    x, shown, notes = _prepare(_encode(Image.new("L", (39_062, 1), 200), "PNG"))
    assert tuple(x.shape) == (1, 3, 32, 32) and abs(float(shown.mean()) - 200 / 255) < 1e-3


def test_a_pillow_bomb_refusal_without_a_pixel_count_still_names_the_limit(monkeypatch):
    def refuse(*args, **kwargs):
        raise Image.DecompressionBombError("a frame is too large")
    monkeypatch.setattr("regnet.inspect.images.Image.open", refuse)
    data = _encode(Image.new("RGB", (4, 4)), "PNG")
    _refusal(data, r"^The image has too many pixels; upload one under 40 megapixels\.$")


def test_a_float_image_with_nan_is_refused():
    values = np.zeros((32, 32), np.float32)
    values[3, 4] = np.nan
    _refusal(_encode(Image.fromarray(values, "F"), "TIFF"), "NaN or infinite")
