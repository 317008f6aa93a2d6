"""A per-machine cache of built Keras models, so a backbone is converted once and then loads in a second or two.

Writes are atomic (save to a temporary name in the same folder, then `os.replace`), so a crash or a second
process never leaves half a model under the real name. A cached file that fails to load is treated as absent:
it is rebuilt and replaced, never a crash. A process killed mid-write leaves its hidden temporary copy (tens of MB,
never read): each later write here sweeps away those older than any live write could be.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.files import current_umask, disk_full_words, display_name, is_disk_full
from pipeline.settings import CACHE, cache_root

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

# A temporary copy older than this was left by a process that died while writing it: a live write takes seconds.
STALE_TEMPORARY_SECONDS = 3600
TEMPORARY_SUFFIXES = (".tmp", ".tmp.keras")  # pipeline.files.write_bytes_atomic's and save_atomic's


def backbone_cache_dir() -> Path:
    """Where built backbones live: `$RETRAIN_STUDIO_CACHE/backbones/`, else `~/.cache/retrain-studio/backbones/`."""
    return cache_root() / "backbones"


def load_or_build(path: Path, build: Callable[[], keras.Model]) -> keras.Model:
    """The model cached at `path`; built with `build()` and cached first when missing or unreadable."""
    import keras

    if path.exists():
        try:
            return keras.saving.load_model(path, compile=False)
        except Exception as error:  # any failure to load means the file is damaged: rebuild it
            log.warning("Rebuilding the damaged cached model %s (%s)", path, error)
    model = build()
    try:
        save_atomic(model, path)
    except OSError as error:  # a read-only or full disk costs speed next time, not this run
        warn_not_cached("the built model", path, error)
    return model


def warn_not_cached(what: str, path: Path, error: OSError) -> None:
    """The one warning for a backbone file this machine's cache could not keep (a full disk, a folder that cannot
    be written): the run goes on from memory; the next one makes the file again."""
    reason = disk_full_words(path.parent) if is_disk_full(error) else error.strerror or str(error)
    log.warning(
        "Could not cache %s at %s: %s. This run goes on, and the next one makes it again; free some space, or set "
        "%s to a folder that can be written",
        what,
        display_name(path),
        reason,
        CACHE.name,
    )


def save_atomic(model: keras.Model, path: Path) -> None:
    """Save `model` as a .keras file so that readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.keras")
    os.close(fd)
    try:
        model.save(tmp)
        # mkstemp's file is private (0600): the cache may be shared by the server's users, as the .tflite copies are
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sweep_stale_temporaries(folder: Path) -> None:
    """Remove the hidden temporary copies (".NAME.XXXX.tmp[.keras]") that processes killed while writing left in
    `folder`, once they are older than `STALE_TEMPORARY_SECONDS`; never a file of another shape, never an error."""
    cutoff = time.time() - STALE_TEMPORARY_SECONDS
    try:
        candidates = [path for path in folder.glob(".*") if path.name.endswith(TEMPORARY_SUFFIXES)]
        for path in candidates:
            if path.is_file() and not path.is_symlink() and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
    except OSError as error:  # a folder another process is sweeping too, or one we may not write: no matter
        log.debug("Could not sweep %s (%s)", folder, error)
