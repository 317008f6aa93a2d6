"""A per-machine cache of built Keras models, so a backbone is converted once and then loads in a second or two.

Writes are atomic (save to a temporary name in the same folder, then `os.replace`), so a crash or a second
process never leaves half a model under the real name. A cached file that fails to load is treated as absent:
it is rebuilt and replaced, never a crash.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.settings import cache_root

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)


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
        log.warning("Could not cache the built model at %s (%s)", path, error)
    return model


def save_atomic(model: keras.Model, path: Path) -> None:
    """Save `model` as a .keras file so that readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.keras")
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
