"""Safe image decoding: the one path from file bytes to model input, for every stage.

Training, evaluation, export checks, prediction and the app all go through `bytes_for_model`
(files through `load_for_model`), so a photo is decoded, cropped and resized the same way
everywhere (retrain.py's exports drifted from its training for want of this). Every way an
image can be bad becomes an `ImageProblem` with a message a user can act on; odd but valid
images (CMYK, 16-bit, transparency, EXIF rotation) are converted, not refused.

Memory is bounded per process, not per image: every decode first reserves its pixels from one
budget shared by all decoding threads (`decode_budget`), and waits while the budget is spent. A
12 KB PNG can declare 100 million pixels (about a gigabyte once decoded), so without a shared budget
a zip of four such files decoded in four threads takes four gigabytes; with it, they take turns.
JPEGs are decoded at reduced size where the model input allows (`draft`); PNG cannot be.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline import settings
from pipeline.errors import ImageProblem

# Formats accepted by content, whatever the file is called. MPO is how some cameras store JPEGs.
SUPPORTED_FORMATS = {"JPEG", "MPO", "PNG", "BMP", "GIF", "WEBP"}
# A decompression bomb is refused before decoding: a 100 MP photo is large but real; 10x that is not.
HOSTED_MAX_PIXELS = 50_000_000  # the app's default: a 50 MP camera photo still passes
# What a user is told when an image is refused for its size.
TOO_LARGE = "image too large; possible decompression bomb — resize it if it is real"
# The background that transparent pixels are laid on, so a cut-out product shot looks like one.
BACKGROUND = (255, 255, 255)


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes, or an ImageProblem saying why they cannot be read."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):  # a pipe or device would block or never end
            raise ImageProblem("not a regular file (a pipe or a device); give the photo file itself")
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageProblem("file not found (moved or deleted since it was listed)") from None
    except OSError as err:
        raise ImageProblem(f"cannot read the file ({err.strerror or err})") from None
    if not data:
        raise ImageProblem("empty file (0 bytes); re-copy or re-export it")
    return data


def decode_image(
    data: bytes, min_side: int | None = None, finish: Callable[[np.ndarray], np.ndarray] | None = None
) -> np.ndarray:
    """Decode image bytes to an (H, W, 3) uint8 RGB array, upright as the camera meant it.

    `min_side` lets JPEG decoding skip detail that the resize would throw away anyway
    (`draft` decodes at 1/2, 1/4 or 1/8 scale while both sides stay at least that large).
    `finish` (crop, resize) runs while the decode budget is still held, so the full-size array is
    gone before another decode may take its place.
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
    limit = max_pixels()
    if width * height > limit:
        raise ImageProblem(
            f"image too large ({width}x{height} pixels, over {limit:,}); "
            "possible decompression bomb — resize it if it is real"
        )
    if width < 1 or height < 1:
        raise ImageProblem("image has no pixels")
    if min_side and image.format in ("JPEG", "MPO"):
        image.draft("RGB", (min_side, min_side))
    with decode_budget().hold(image.size[0] * image.size[1]):  # the size after draft: what is decoded
        # No warnings.catch_warnings() here: it swaps process-wide filters, and images are decoded in threads.
        try:
            image.load()
            image = ImageOps.exif_transpose(image)
        except Image.DecompressionBombError:  # a GIF frame larger than the image it belongs to
            raise ImageProblem(TOO_LARGE) from None
        except Exception as err:
            raise ImageProblem(f"truncated or damaged image data ({err}); re-copy or re-export it") from None
        rgb = _to_rgb_array(image)
        del image
        return finish(rgb) if finish else rgb


def max_pixels() -> int:
    """The largest image decoded, in pixels (RETRAIN_STUDIO_MAX_PIXELS; the app lowers it for strangers)."""
    return settings.MAX_PIXELS.whole()


class PixelBudget:
    """Pixels that may be decoding at once in this process; a decode waits until its share is free.

    An image larger than the whole budget takes all of it (it decodes alone), so nothing waits forever.
    """

    def __init__(self, total: int):
        self.total = max(int(total), 1)
        self.in_use = 0
        self.changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        share = min(max(int(pixels), 1), self.total)
        with self.changed:
            self.changed.wait_for(lambda: self.in_use + share <= self.total)
            self.in_use += share
        try:
            yield
        finally:
            with self.changed:
                self.in_use -= share
                self.changed.notify_all()


# glibc's mallopt parameter, and the size from which allocations get their own mapping (default: dynamic).
M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES = -3, 1 << 20


def return_freed_memory() -> bool:
    """Make this process (and those it starts) give freed image memory back to the system; False off glibc.

    By default glibc keeps large freed blocks in per-thread arenas for reuse, so after four decoding
    threads have each held one huge image, the process keeps four images' worth of memory even though
    the budget let only one decode at a time. With a fixed threshold, every block of 1 MB or more is
    its own mapping and is unmapped when freed. The app calls this once at start.
    """
    import ctypes
    import ctypes.util
    import os

    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD_BYTES))  # read by child processes at start
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


# One budget per process, by size: decoding threads must share it, so it cannot live in a caller's object.
_BUDGETS: dict[int, PixelBudget] = {}
_BUDGETS_LOCK = threading.Lock()


def decode_budget() -> PixelBudget:
    """This process's decode budget (RETRAIN_STUDIO_DECODE_BUDGET_PIXELS, default: one largest image)."""
    total = settings.DECODE_BUDGET_PIXELS.whole(default=max_pixels())
    with _BUDGETS_LOCK:
        return _BUDGETS.setdefault(total, PixelBudget(total))


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
    return rgb[top : top + side, left : left + side]


def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize a square image to size x size with bilinear filtering (antialiased on the way down)."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return np.ascontiguousarray(rgb)
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def prepare_for_model(rgb: np.ndarray, size: int) -> np.ndarray:
    """A decoded image as the model sees it: centre square, resized to size x size, uint8 RGB."""
    return resize_square(center_square(rgb), size)


def load_image(
    path: str | Path, min_side: int | None = None, finish: Callable[[np.ndarray], np.ndarray] | None = None
) -> np.ndarray:
    """Read and decode one image file (see `decode_image`)."""
    return decode_image(read_bytes(path), min_side=min_side, finish=finish)


def bytes_for_model(data: bytes, size: int) -> np.ndarray:
    """Decode, crop and resize image bytes to the model's input: the only such path (files and uploads)."""
    return decode_image(data, min_side=size, finish=lambda rgb: prepare_for_model(rgb, size))


def load_for_model(path: str | Path, size: int) -> np.ndarray:
    """Read one image file and make it the model's input (see `bytes_for_model`)."""
    return bytes_for_model(read_bytes(path), size)


# Identifies the preprocessing above in cache keys: change it and old bottlenecks are not reused.
PREPROCESS_ID = "center-square/bilinear/draft/v1"


def thumbnail(path: str | Path, size: int = 160) -> np.ndarray:
    """A small square RGB copy of an image (its centre) for galleries; JPEGs are decoded at reduced size."""
    from PIL import Image

    return load_image(
        path,
        min_side=size,
        finish=lambda rgb: np.asarray(
            Image.fromarray(center_square(rgb)).resize((size, size), Image.Resampling.BILINEAR)
        ),
    )
