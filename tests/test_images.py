"""The one decode path: every bad file becomes an ImageProblem, every odd-but-valid file becomes upright RGB."""

import os

import numpy as np
import pytest
from imagegen import (
    BAD_FILES,
    ODD_FILES,
    class_image,
    write_bmp,
    write_cmyk_jpeg,
    write_exif_rotated_jpeg,
    write_gray16_png,
    write_gray_jpeg,
    write_image,
    write_la_png,
    write_p_transparent_png,
    write_png_bomb,
    write_rgba_png,
    write_two_frame_gif,
    write_unreadable,
    write_webp,
)

from pipeline.errors import ImageProblem
from pipeline.images import load_image, read_bytes

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def close_to(pixel, colour, tolerance=12):
    return np.all(np.abs(np.asarray(pixel, int) - np.asarray(colour, int)) <= tolerance)


# ---- Bad input: a problem with a message, never a crash ---------------------------------------------------------


@pytest.mark.parametrize(
    "kind, message",
    [
        ("empty", r"empty file \(0 bytes\)"),
        ("truncated_jpeg", "truncated or damaged"),
        ("not_an_image", "not an image"),
        ("png_bomb", "image too large.*decompression bomb"),
        ("tiff_as_jpg", "unsupported image type TIFF"),
    ],
)
def test_bad_file_is_a_problem(tmp_path, kind, message):
    path = BAD_FILES[kind](tmp_path / "bad.jpg")
    with pytest.raises(ImageProblem, match=message):
        load_image(path)


def test_bomb_over_our_limit_but_under_pillows_is_refused_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAIN_STUDIO_MAX_PIXELS", "100")  # the setting, as an operator would lower it
    path = write_image(tmp_path / "big.png", class_image("red", 0, (20, 20)))
    with pytest.raises(ImageProblem, match=r"too large \(20x20 pixels"):
        load_image(path)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_patched_header_bomb_is_refused_however_large(tmp_path):
    for width, height in ((100_000, 100_000), (12_000, 12_000)):  # over Pillow's own limit; over ours only
        with pytest.raises(ImageProblem, match="image too large.*decompression bomb"):
            load_image(write_png_bomb(tmp_path / f"bomb{width}.png", width, height))


def test_missing_file_is_a_problem(tmp_path):
    with pytest.raises(ImageProblem, match="file not found"):
        read_bytes(tmp_path / "gone.jpg")


def test_unreadable_path_is_a_problem(tmp_path):
    (tmp_path / "folder.jpg").mkdir()  # reading a folder fails like an unreadable file, even as root
    with pytest.raises(ImageProblem, match="cannot read the file"):
        load_image(tmp_path / "folder.jpg")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_file_without_read_permission_is_a_problem(tmp_path):
    path = write_unreadable(tmp_path / "locked.jpg")
    try:
        with pytest.raises(ImageProblem, match="cannot read the file"):
            load_image(path)
    finally:
        path.chmod(0o644)


# ---- Odd but valid: converted, not refused ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(ODD_FILES))
def test_odd_file_decodes_to_rgb(tmp_path, kind):
    suffix = {
        "webp": ".webp",
        "bmp": ".bmp",
        "two_frame_gif": ".gif",
        "cmyk_jpeg": ".jpg",
        "gray_jpeg": ".jpg",
        "exif_rotated_jpeg": ".jpg",
        "png_named_jpg": ".jpg",
    }.get(kind, ".png")
    rgb = load_image(ODD_FILES[kind](tmp_path / f"odd{suffix}"))
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


def test_transparent_rgba_pixels_become_white(tmp_path):
    rgb = load_image(write_rgba_png(tmp_path / "cutout.png"))
    assert close_to(rgb[5, 2], RED, 0) and close_to(rgb[5, 15], WHITE, 0)


def test_transparent_grey_alpha_pixels_become_white(tmp_path):
    rgb = load_image(write_la_png(tmp_path / "la.png"))
    assert close_to(rgb[5, 2], BLACK, 0) and close_to(rgb[5, 15], WHITE, 0)


def test_palette_transparency_becomes_white(tmp_path):
    rgb = load_image(write_p_transparent_png(tmp_path / "p.png"))
    assert close_to(rgb[5, 2], GREEN, 0) and close_to(rgb[5, 15], WHITE, 0)


def test_cmyk_jpeg_converts_to_its_rgb_colour(tmp_path):
    rgb = load_image(write_cmyk_jpeg(tmp_path / "cmyk.jpg"))
    assert rgb.shape == (16, 24, 3) and close_to(rgb[8, 12], RED, 20)


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    rgb = load_image(write_gray16_png(tmp_path / "deep.png"))
    row = rgb[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert 120 <= row[8] <= 140  # about half way, where clipping would have made it 255
    assert np.all(np.diff(row) >= 0) and len(set(row)) > 10


def test_dark_16_bit_grey_stays_dark(tmp_path):
    # Values up to 255 out of 65535 are near black; judging the range by the pixels would make them white.
    rgb = load_image(write_gray16_png(tmp_path / "dark.png", top=255))
    assert rgb.max() <= 1


def test_grey_jpeg_becomes_three_equal_channels(tmp_path):
    rgb = load_image(write_gray_jpeg(tmp_path / "grey.jpg"))
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and close_to(rgb[8, 12], (128, 128, 128), 3)


def test_exif_rotation_is_applied(tmp_path):
    rgb = load_image(write_exif_rotated_jpeg(tmp_path / "phone.jpg"))
    assert rgb.shape == (40, 20, 3)  # stored 40 wide x 20 tall; upright 20 wide x 40 tall
    assert close_to(rgb[2, 17], RED, 40)  # the stored top-left corner, now at the top right
    assert close_to(rgb[2, 2], BLUE, 40) and close_to(rgb[37, 17], BLUE, 40)


def test_gif_gives_its_first_frame(tmp_path):
    rgb = load_image(write_two_frame_gif(tmp_path / "anim.gif"))
    assert close_to(rgb[8, 8], RED, 0)


def test_webp_and_bmp_decode(tmp_path):
    assert close_to(load_image(write_webp(tmp_path / "g.webp"))[4, 4], GREEN, 0)
    assert close_to(load_image(write_bmp(tmp_path / "b.bmp"))[4, 4], BLUE, 0)


def test_type_is_decided_by_content_not_name(tmp_path):
    png_as_jpg = ODD_FILES["png_named_jpg"](tmp_path / "really_a_png.jpg")
    upper = write_image(tmp_path / "SHOUTY.JPG", class_image("red", 0))
    assert close_to(load_image(png_as_jpg)[4, 4], RED, 0)
    assert load_image(upper).shape == (40, 48, 3)


def test_min_side_keeps_both_sides_at_least_that_large(tmp_path):
    path = write_image(tmp_path / "big.jpg", class_image("red", 0, (400, 300)))
    small = load_image(path, min_side=64)
    assert min(small.shape[:2]) >= 64 and small.shape[0] < 300
