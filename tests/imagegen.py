"""Generated image fixtures: small class-folder datasets, and every kind of bad or odd image file.

Images are made from numbers, so tests need no downloads and a dataset of a few dozen images
is written in milliseconds. Each class has its own colour and stripe direction, with noise on
top so that no two images are byte-identical (duplicates are made on purpose, never by chance)
and a small model can still tell the classes apart.

    make_class_folders(tmp_path / "data", {"red": 12, "blue": 12})
    BAD_FILES["truncated_jpeg"](tmp_path / "x.jpg")
"""

from __future__ import annotations

import colorsys
import io
import shutil
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor

# Extension → Pillow format name, for images written by name.
FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF", ".webp": "WEBP"}


# ---- Images that look like their class --------------------------------------------------------------------------


def class_colour(label: str, index: int) -> tuple[int, int, int]:
    """The class's colour: the named colour when the label is one ("red"), else a hue spread by index."""
    try:
        return ImageColor.getrgb(label)
    except ValueError:
        red, green, blue = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.8, 0.9)
        return int(red * 255), int(green * 255), int(blue * 255)


def class_image(label: str, index: int, size: tuple[int, int] = (48, 40), seed: int = 0) -> np.ndarray:
    """An (H, W, 3) uint8 image of class number `index`: its colour, its stripe direction, plus noise.

    `size` is (width, height) as Pillow counts it. Different seeds give different images.
    """
    width, height = size
    rng = np.random.default_rng([seed, index, zlib.crc32(label.encode())])
    rows, cols = np.mgrid[0:height, 0:width]
    angle = np.pi * (index % 4) / 4
    phase = rng.uniform(0, 2 * np.pi)
    stripes = np.sin((cols * np.cos(angle) + rows * np.sin(angle)) * (2 * np.pi / 8) + phase)
    base = np.array(class_colour(label, index), dtype=np.float64)
    image = base[None, None, :] * (0.75 + 0.25 * stripes[..., None]) + rng.normal(0, 12, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_image(path: str | Path, rgb: np.ndarray, image_format: str | None = None, **save_options) -> Path:
    """Save an RGB array, in the format its extension names unless `image_format` says otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_format = image_format or FORMATS[path.suffix.lower()]
    if image_format == "JPEG":
        save_options.setdefault("quality", 90)
    Image.fromarray(rgb).save(path, image_format, **save_options)
    return path


def make_class_folders(
    root: str | Path,
    classes: dict[str, int] | None = None,
    size: tuple[int, int] = (48, 40),
    seed: int = 0,
    ext: str = ".jpg",
) -> Path:
    """Write ROOT/<class>/<class>_NNN.jpg for each class and count; returns ROOT.

    Classes are numbered in sorted order, so the same dict always gives the same pictures.
    """
    root = Path(root)
    classes = {"red": 12, "blue": 12} if classes is None else classes
    for index, label in enumerate(sorted(classes)):
        for number in range(classes[label]):
            rgb = class_image(label, index, size, seed=seed * 100_003 + number)
            write_image(root / label / f"{label}_{number:03d}{ext}", rgb)
    return root


def make_split_folders(
    root: str | Path,
    splits: dict[str, dict[str, int]],
    size: tuple[int, int] = (48, 40),
    seed: int = 0,
    ext: str = ".jpg",
) -> Path:
    """Write ROOT/<split folder>/<class>/... (e.g. {"train": {"red": 8}, "val": {"red": 2}}); returns ROOT."""
    root = Path(root)
    for offset, (folder, classes) in enumerate(sorted(splits.items())):
        make_class_folders(root / folder, classes, size, seed=seed + 1000 * (offset + 1), ext=ext)
    return root


def make_zip(
    folder: str | Path, zip_path: str | Path, top_folder: str | None = None, extra: dict[str, bytes] | None = None
) -> Path:
    """Zip every file under `folder` (optionally inside one `top_folder`), plus `extra` {name: bytes} entries."""
    folder, zip_path = Path(folder), Path(zip_path)
    prefix = f"{top_folder}/" if top_folder else ""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return zip_path


def write_labels_csv(
    path: str | Path, rows: list[tuple[str, str]], header: str = "image_id,label", bom: bool = False
) -> Path:
    """A labels CSV of (image id, label) rows under `header`."""
    path = Path(path)
    text = header + "\n" + "".join(f"{image_id},{label}\n" for image_id, label in rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def flatten_to_csv_layout(class_root: str | Path, images: str | Path, drop_extension: bool = False) -> list[tuple]:
    """Move a class-folder dataset's files into one flat folder; returns the (image id, label) rows for a CSV."""
    rows = []
    Path(images).mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(class_root).rglob("*")):
        if path.is_file():
            shutil.move(path, Path(images) / path.name)
            rows.append((path.stem if drop_extension else path.name, path.parent.name))
    return rows


# ---- Bad files: each must become a reported problem, never a crash ------------------------------------------------


def write_empty(path: str | Path) -> Path:
    """A 0-byte file."""
    Path(path).write_bytes(b"")
    return Path(path)


def write_truncated_jpeg(path: str | Path) -> Path:
    """A JPEG cut off halfway through its image data (an interrupted copy)."""
    buffer = io.BytesIO()
    Image.fromarray(class_image("noise", 0, (64, 64))).save(buffer, "JPEG", quality=95)
    data = buffer.getvalue()
    Path(path).write_bytes(data[: len(data) // 2])
    return Path(path)


def write_not_an_image(path: str | Path) -> Path:
    """Text saved under an image name."""
    Path(path).write_text("this is a note, not a photo\n")
    return Path(path)


def write_png_bomb(path: str | Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A tiny PNG whose header claims `width` x `height` pixels (a decompression bomb, cheaply)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    # IHDR is the first chunk: length(4) type(4) at offset 8, then width, height, ... and a CRC over type+data.
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    Path(path).write_bytes(bytes(data))
    return Path(path)


def write_unreadable(path: str | Path) -> Path:
    """A valid JPEG with no read permission (root can still read it: tests skip then)."""
    write_image(path, class_image("red", 0))
    Path(path).chmod(0)
    return Path(path)


def write_tiff_as_jpg(path: str | Path) -> Path:
    """A real image in a format Retrain Studio does not take (TIFF), named .jpg."""
    Image.fromarray(class_image("green", 1)).save(path, "TIFF")
    return Path(path)


BAD_FILES: dict[str, Callable[[str | Path], Path]] = {
    "empty": write_empty,
    "truncated_jpeg": write_truncated_jpeg,
    "not_an_image": write_not_an_image,
    "png_bomb": write_png_bomb,
    "tiff_as_jpg": write_tiff_as_jpg,
}


# ---- Odd but valid files: each must decode to upright RGB ---------------------------------------------------------


def write_rgba_png(path: str | Path) -> Path:
    """RGBA: left half opaque red, right half fully transparent (must come out white)."""
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[:, :10] = (255, 0, 0, 255)
    rgba[:, 10:] = (0, 0, 255, 0)
    Image.fromarray(rgba, "RGBA").save(path, "PNG")
    return Path(path)


def write_la_png(path: str | Path) -> Path:
    """Grey with alpha: left half opaque black, right half transparent."""
    la = np.zeros((20, 20, 2), np.uint8)
    la[:, :10] = (0, 255)
    la[:, 10:] = (0, 0)
    Image.fromarray(la, "LA").save(path, "PNG")
    return Path(path)


def write_p_transparent_png(path: str | Path) -> Path:
    """Palette image whose colour 0 is transparent: left half index 1 (green), right half index 0."""
    image = Image.new("P", (20, 20), 0)
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    image.paste(1, (0, 0, 10, 20))
    image.save(path, "PNG", transparency=0)
    return Path(path)


def write_cmyk_jpeg(path: str | Path) -> Path:
    """A CMYK JPEG (print workflows) of pure red: C=0, M=255, Y=255, K=0."""
    Image.new("CMYK", (24, 16), (0, 255, 255, 0)).save(path, "JPEG", quality=95)
    return Path(path)


def write_gray16_png(path: str | Path, top: int = 65535) -> Path:
    """16-bit greyscale: a left-to-right ramp from 0 to `top` over 16 columns."""
    ramp = np.linspace(0, top, 16).round().astype(np.uint16)
    Image.fromarray(np.tile(ramp, (8, 1))).save(path, "PNG")
    return Path(path)


def write_gray_jpeg(path: str | Path) -> Path:
    """8-bit greyscale JPEG, mid grey."""
    Image.new("L", (24, 16), 128).save(path, "JPEG", quality=95)
    return Path(path)


def write_exif_rotated_jpeg(path: str | Path, orientation: int = 6) -> Path:
    """A 40 wide x 20 tall JPEG, blue with a red top-left corner, whose EXIF says 'rotate 90° clockwise'.

    Upright it is 20 wide x 40 tall with the red corner at the top right.
    """
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:] = (0, 0, 255)
    rgb[:8, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, "JPEG", quality=95, exif=exif.tobytes())
    return Path(path)


def write_two_frame_gif(path: str | Path) -> Path:
    """An animated GIF: first frame red, second blue (the first frame is the image)."""
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=100)
    return Path(path)


def write_webp(path: str | Path) -> Path:
    """A lossless WebP of pure green."""
    Image.new("RGB", (16, 16), (0, 255, 0)).save(path, "WEBP", lossless=True)
    return Path(path)


def write_bmp(path: str | Path) -> Path:
    """A BMP of pure blue."""
    Image.new("RGB", (16, 16), (0, 0, 255)).save(path, "BMP")
    return Path(path)


def write_png_named_jpg(path: str | Path) -> Path:
    """A PNG of pure red under a .jpg name (decided by content, so fine)."""
    Image.new("RGB", (16, 16), (255, 0, 0)).save(path, "PNG")
    return Path(path)


ODD_FILES: dict[str, Callable[[str | Path], Path]] = {
    "rgba_png": write_rgba_png,
    "la_png": write_la_png,
    "p_transparent_png": write_p_transparent_png,
    "cmyk_jpeg": write_cmyk_jpeg,
    "gray16_png": write_gray16_png,
    "gray_jpeg": write_gray_jpeg,
    "exif_rotated_jpeg": write_exif_rotated_jpeg,
    "two_frame_gif": write_two_frame_gif,
    "webp": write_webp,
    "bmp": write_bmp,
    "png_named_jpg": write_png_named_jpg,
}
