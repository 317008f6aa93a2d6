"""Errors a user can cause, each with a message that names the file and the fix.

The CLI prints these as one line and exits non-zero; the app shows them with `st.error`.
Anything else that escapes is a bug in Retrain Studio, not in the user's data.
"""


class RetrainError(Exception):
    """A problem the user can fix: bad input, impossible settings, missing download."""


class DatasetError(RetrainError):
    """The dataset cannot be trained on as it is (one class, empty class, bad layout)."""


class ImageProblem(RetrainError):
    """One image cannot be used; it is reported as a problem and skipped, never a crash."""


class BackboneUnavailable(RetrainError):
    """A backbone's weights cannot be had here (no internet, bad file)."""


class RunCancelled(RetrainError):
    """The run was cancelled (SIGTERM or the app's Cancel button)."""


class ExportUnavailable(RetrainError):
    """An optional export format cannot be made here (its converter is not installed, or it failed to convert)."""
