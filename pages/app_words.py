"""The engine's words as the app's pages say them: a CLI flag or a config name becomes the label of the control that
sets it, and ML jargon ("caching bottlenecks", "LiteRT", "p50") becomes plain words.

The engine's messages are also the CLI's, where the flags and the exact terms are right, so they are translated
here, at the page, and never changed at their source. A translation that no longer finds its text (the engine's
wording changed) leaves the message as it was; the page tests catch that, since they look for the app's words.
"""

from __future__ import annotations

import dataclasses
import re

from pipeline.config import RunConfig

# The engine's suggestion to raise --testing_percentage, which no page offers: the app's way to more test photos is
# more photos (the split holds out the same share of each class).
_RAISE_TEST_PERCENTAGE = re.compile(
    r", or \(on the command line\) raise the test percentage \(now (?P<now>[0-9.]+)%, --testing_percentage\) so "
    r"that (?P<enough>.+?) are held out for testing\."
)
ADD_PHOTOS = "Add photos or classes"  # the Dataset page's button that grows the current dataset
_FLAG = re.compile(r"--([a-z][a-z0-9_]*)")

# The engine's jargon in a run's stage lines and messages (pipeline.stage_progress.TITLES, a cancelled or
# interrupted run's or likely-mistakes check's message), in a newcomer's words.
PHRASES = {
    "caching bottlenecks": "reading each photo once with the backbone (saved for reruns)",
    # The "preparing the backbone" line skipped when every photo was read before (by an earlier run or check).
    "every bottleneck was in the cache": "every photo was already read by the backbone (saved from an earlier run)",
    "every bottleneck cached so far is kept": "every photo read so far is kept for the next run",
    "cached bottlenecks are kept": "the photos read so far are kept for the next run",
    "bottlenecks cached so far are kept": "the photos read so far are kept for the next check or run",
}


def split_warning_words(warning: str) -> str:
    """The too-few-test-photos warning with the app's remedy (the Dataset page's button) for the CLI's flag."""
    return _RAISE_TEST_PERCENTAGE.sub(
        lambda match: (
            f" (on the Dataset page, '{ADD_PHOTOS}'): about {match['now']}% of each class's photos are held out "
            f"for testing, and {match['enough']} are needed."
        ),
        warning,
    )


# Controls whose label is not their field's name in words.
LABELS = {"class_size": "Training images per class (about)"}


def control_label(name: str) -> str:
    """What a settings control built from config field `name` is labelled on Configure ("Learning rate")."""
    return LABELS.get(name) or name.replace("_", " ").capitalize()


def knob_help(text: str) -> str:
    """A setting's help text with each `--flag` as its control's label: "0 means train by 'Epochs'"."""
    return _FLAG.sub(lambda match: f"'{control_label(match[1])}'", text)


# A config field's name in a message ("fine_tune_layers works on one backbone"), as its section.name or alone; only
# names with an underscore, so that "epochs" or "zoom" in a sentence stay words.
_FIELD = re.compile(
    r"\b(?:(?:dataset|augment|train|output)\.)?("
    + "|".join(
        spec.name
        for section in dataclasses.fields(RunConfig)
        for spec in dataclasses.fields(getattr(RunConfig(), section.name))
        if "_" in spec.name
    )
    + r")\b"
)


def setting_words(text: str) -> str:
    """A settings error with each config name as its control's label: "'Fine tune layers' works on one backbone"."""
    return _FIELD.sub(lambda match: f"'{control_label(match[1])}'", text)


def engine_words(text: str) -> str:
    """A run's stage line or message with the engine's jargon in plain words ("caching bottlenecks: 32/126" →
    "reading each photo once with the backbone (saved for reruns): 32/126")."""
    for phrase, words in PHRASES.items():
        text = text.replace(phrase, words)
    return text
