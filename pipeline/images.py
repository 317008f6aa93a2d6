"""Safe image decoding: the one path from file bytes to model input, for every stage.

Training, evaluation, export checks, prediction and the app all go through `bytes_for_model`
(files through `load_for_model`), so a photo is decoded, cropped and resized the same way
everywhere (retrain.py's exports drifted from its training for want of this). Every way an
image can be bad becomes an `ImageProblem` with a message a user can act on; odd but valid
images (CMYK, 16-bit, transparency, EXIF rotation) are converted, not refused.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.config import env_whole_number
from pipeline.errors import ImageProblem

# Formats accepted by content, whatever the file is called. MPO is how some cameras store JPEGs.
SUPPORTED_FORMATS = {"JPEG", "MPO", "PNG", "BMP", "GIF", "WEBP"}
# A decompression bomb is refused before decoding: a 100 MP photo is large but real; 10x that is not.
MAX_PIXELS = env_whole_number("RETRAIN_STUDIO_MAX_PIXELS", 100_000_000)
# What a user is told when an image is refused for its size.
TOO_LARGE = "image too large; possible decompression bomb — resize it if it is real"
# The background that transparent pixels are laid on, so a cut-out product shot looks like one.
BACKGROUND = (255, 255, 255)


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes, or an ImageProblem saying why they cannot be read."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageProblem("file not found (moved or deleted since it was listed)") from None
    except OSError as err:
        raise ImageProblem(f"cannot read the file ({err.strerror or err})") from None
    if not data:
        raise ImageProblem("empty file (0 bytes); re-copy or re-export it")
    return data


def decode_image(data: bytes, min_side: int | None = None) -> np.ndarray:
    """Decode image bytes to an (H, W, 3) uint8 RGB array, upright as the camera meant it.

    `min_side` lets JPEG decoding skip detail that the resize would throw away anyway
    (`draft` decodes at 1/2, 1/4 or 1/8 scale while both sides stay at least that large).
    """
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageProblem("not an image (content is not JPEG, PNG, BMP, GIF or WebP)") from None
    except Image.DecompressionBombError:  # Pillow's own limit (twice its warning size) is checked on open
        raise ImageProblem(TOO_LARGE) from None
    except Exception as err:  # Pillow raises many types for damaged headers
        raise ImageProblem(f"damaged image header ({err})") from None
    if image.format not in SUPPORTED_FORMATS:
        raise ImageProblem(f"unsupported image type {image.format}; convert it to JPEG or PNG")
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageProblem(f"image too large ({width}x{height} pixels, over {MAX_PIXELS:,}); "
                           "possible decompression bomb — resize it if it is real")
    if width < 1 or height < 1:
        raise ImageProblem("image has no pixels")
    if min_side and image.format in ("JPEG", "MPO"):
        image.draft("RGB", (min_side, min_side))
    # No warnings.catch_warnings() here: it swaps process-wide filters, and images are decoded in threads.
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except Image.DecompressionBombError:  # a GIF frame larger than the image it belongs to
        raise ImageProblem(TOO_LARGE) from None
    except Exception as err:
        raise ImageProblem(f"truncated or damaged image data ({err}); re-copy or re-export it") from None
    return _to_rgb_array(image)


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any Pillow mode to RGB uint8: transparency onto white, CMYK and 16-bit converted."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_depth_gray_to_rgb(np.asarray(image), sixteen_bit=image.mode.startswith("I;16"))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        flattened = Image.new("RGB", rgba.size, BACKGROUND)
        flattened.paste(rgba, mask=rgba.getchannel("A"))
        image = flattened
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def _high_depth_gray_to_rgb(values: np.ndarray, sixteen_bit: bool) -> np.ndarray:
    """16-bit or float grayscale to 8-bit RGB, scaled by the type's range (not clipped).

    A 16-bit file's range is 0..65535 whatever its pixels are (a dark one stays dark); for 32-bit
    and float modes the range is guessed from the values.
    """
    values = values.astype(np.float64)
    top = 65535.0 if sixteen_bit or values.max(initial=0) > 255 else 255.0
    gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def center_square(rgb: np.ndarray) -> np.ndarray:
    """The largest centred square of an image.

    Cropping keeps shapes true where squashing would stretch them; measured on flowers with the
    default backbone it gave the better test accuracy (see bench/).
    """
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return rgb[top:top + side, left:left + side]


def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize a square image to size x size with bilinear filtering (antialiased on the way down)."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return np.ascontiguousarray(rgb)
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def prepare_for_model(rgb: np.ndarray, size: int) -> np.ndarray:
    """A decoded image as the model sees it: centre square, resized to size x size, uint8 RGB."""
    return resize_square(center_square(rgb), size)


def load_image(path: str | Path, min_side: int | None = None) -> np.ndarray:
    """Read and decode one image file (see `decode_image`)."""
    return decode_image(read_bytes(path), min_side=min_side)


def bytes_for_model(data: bytes, size: int) -> np.ndarray:
    """Decode, crop and resize image bytes to the model's input: the only such path (files and uploads)."""
    return prepare_for_model(decode_image(data, min_side=size), size)


def load_for_model(path: str | Path, size: int) -> np.ndarray:
    """Read one image file and make it the model's input (see `bytes_for_model`)."""
    return bytes_for_model(read_bytes(path), size)


# Identifies the preprocessing above in cache keys: change it and old bottlenecks are not reused.
PREPROCESS_ID = "center-square/bilinear/draft/v1"
