"""Where images come from and bottlenecks go: a local folder, or a URI that pyarrow's filesystems understand.

Object stores are reached with short timeouts and few retries, and instance-metadata credential lookups are
off unless asked for, so a wrong bucket or missing credentials is one clear line in seconds rather than a
long hang inside the first Ray task.
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath

from pipeline.errors import ImageProblem, RetrainError
from pipeline.files import has_hidden_part

TIMEOUT_SECONDS = 10.0  # connect and request timeouts for object stores
RETRIES = 2


def is_uri(location: str) -> bool:
    """True for scheme://... (file:// too: a local folder read the way a bucket is, which tests use)."""
    return "://" in str(location)


def filesystem_for(location: str):
    """(pyarrow filesystem, path inside it) for a local folder or a URI."""
    from pyarrow import fs

    location = str(location)
    if not is_uri(location):
        return fs.LocalFileSystem(), os.path.abspath(location)
    scheme = location.split("://", 1)[0].lower()
    try:
        if scheme == "s3":
            # Off EC2 the metadata endpoint never answers; asking it is what makes a missing credential hang.
            os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
            bucket_and_path = location.split("://", 1)[1]
            filesystem = fs.S3FileSystem(
                connect_timeout=TIMEOUT_SECONDS,
                request_timeout=TIMEOUT_SECONDS,
                retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=RETRIES),
            )
            return filesystem, bucket_and_path.rstrip("/")
        if scheme in ("gs", "gcs"):
            from datetime import timedelta

            filesystem = fs.GcsFileSystem(retry_time_limit=timedelta(seconds=TIMEOUT_SECONDS))
            return filesystem, location.split("://", 1)[1].rstrip("/")
        return fs.FileSystem.from_uri(location)
    except Exception as error:  # pyarrow raises ArrowInvalid / OSError with the backend's text
        raise RetrainError(f"cannot open {location}: {_short(error)}") from None


def probe(location: str) -> None:
    """One line, in seconds, when a folder or URI cannot be reached (no such scheme or bucket, no credentials).

    A location that does not exist yet is fine (shards create their folder); only failing to ask is refused.
    """
    from pyarrow import fs

    filesystem, base = filesystem_for(location)
    # On an object store the first part is the bucket: a prefix may be new, a bucket must exist.
    bucket = base.split("/", 1)[0] if not isinstance(filesystem, fs.LocalFileSystem) else None
    try:
        filesystem.get_file_info(base)
        missing = bucket and filesystem.get_file_info(bucket).type == fs.FileType.NotFound
    except Exception as error:
        raise RetrainError(f"cannot reach {location}: {_short(error)}; check the name and your credentials") from None
    if missing:
        raise RetrainError(f"cannot reach {location}: no such bucket ({bucket}); check the name and your credentials")


def join(base: str, *parts: str) -> str:
    return str(PurePosixPath(base, *parts))


def list_files(location: str) -> list[str]:
    """Every non-hidden file under a folder or URI prefix, sorted, as paths inside its filesystem."""
    from pyarrow import fs

    filesystem, base = filesystem_for(location)
    try:
        info = filesystem.get_file_info(base)
        if info.type != fs.FileType.Directory:
            raise RetrainError(f"{location}: not a folder (or no such bucket or prefix)")
        entries = filesystem.get_file_info(fs.FileSelector(base, recursive=True))
    except RetrainError:
        raise
    except Exception as error:
        raise RetrainError(f"cannot list {location}: {_short(error)}; check the name and your credentials") from None
    files = []
    for entry in entries:
        relative = PurePosixPath(entry.path).relative_to(PurePosixPath(base))
        if entry.type == fs.FileType.File and not has_hidden_part(relative):
            files.append(entry.path)
    return sorted(files)


def read_file_bytes(filesystem, path: str) -> bytes:
    """One file's bytes, or an ImageProblem saying why they cannot be read (as `pipeline.images.read_bytes`)."""
    try:
        with filesystem.open_input_stream(path) as handle:
            data = handle.read()
    except FileNotFoundError:
        raise ImageProblem("file not found (moved or deleted since it was listed)") from None
    except OSError as error:
        raise ImageProblem(f"cannot read the file ({_short(error)})") from None
    if not data:
        raise ImageProblem("empty file (0 bytes); re-copy or re-export it")
    return data


def _short(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]
