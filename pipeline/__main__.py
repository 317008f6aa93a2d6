"""The command line: retrain.py's flag names, generated from the one config dataclass.

    python -m pipeline inspect --image_dir DIR
    python -m pipeline cache   --image_dir DIR --bottleneck_dir DIR
    python -m pipeline train   --image_dir DIR [--output_dir RUN_DIR] [--how_many_training_steps 4000 ...]
    python -m pipeline run     --run_dir RUN_DIR            # a run from its config.json (the app uses this)
    python -m pipeline predict --model RUN_DIR|MODEL.keras IMAGE...   # or --image_dir DIR --output_csv FILE
    python -m pipeline suspects --image_dir DIR [--top N]  # likely-mislabeled images, most suspicious first

retrain.py's and label_image.py's tutorial lines run as written: flags whose job is gone are
answered with one line while the run goes on. Heavy modules (TensorFlow) are imported only where
a command first needs them, so `inspect` and a warm rerun's report come quickly, and their log noise is silenced
unless --verbose. A
user's mistake prints one line and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pipeline.config import AugmentConfig, DatasetConfig, OutputConfig, RunConfig, TrainConfig, knob_of
from pipeline.errors import RetrainError, RunCancelled
from pipeline.progress import cli_progress

# retrain.py flags that ask for something this program cannot do: one line, exit 2.
UNSUPPORTED_FLAGS = {
    "tfhub_module": "TF Hub modules are not used; choose a backbone with --architecture (efficientnet_lite0 works "
    "offline; inception_v3, mobilenet_v2, resnet50, or PATH.keras with --bottleneck_layer)",
}
# retrain.py flags whose job is gone: answered with one line while the run goes on.
RETIRED_FLAGS = {
    "model_dir": "backbone weights need no folder: efficientnet_lite0 ships with the install and Keras "
    "backbones use Keras's own cache",
    "checkpoint_path": "no checkpoint file is needed: the head keeps its best weights and the run exports them",
    "logging_verbosity": "TensorFlow's log is silenced; --verbose (or --logging_verbosity DEBUG) shows it",
    "final_tensor_name": "the exported models name their output 'probabilities'",
    "intermediate_output_graphs_dir": "intermediate graphs are not written; each run keeps its best weights",
    "intermediate_store_frequency": "intermediate graphs are not written; each run keeps its best weights",
    "output_graph": "TF2 has no frozen graphs",  # answered in command_train: a Keras model goes next to it
}
# label_image.py's flags that the exported models make unnecessary.
LABEL_IMAGE_RETIRED = {
    name: "not needed: the model does its own crop, resize and scaling, and names its output"
    for name in ("input_layer", "output_layer", "input_height", "input_width", "input_mean", "input_std")
}
# Cached augmented copies of each training image when a distortion flag is given without a count:
# retrain.py distorted every step (and lost its cache); a few cached copies keep most of that variety.
DISTORTION_COPIES = 3
DISTORTION_FLAGS = ("flip_left_right", "random_crop", "random_scale", "random_brightness")
SECTIONS = {"dataset": DatasetConfig, "augment": AugmentConfig, "train": TrainConfig, "output": OutputConfig}


def add_config_flags(parser: argparse.ArgumentParser, sections: list[str]) -> None:
    """One flag per config field, named as the field, with the field's help."""
    for section in sections:
        group = parser.add_argument_group(section)
        for field in dataclasses.fields(SECTIONS[section]):
            knob = knob_of(SECTIONS[section], field.name)
            kwargs: dict[str, Any] = {
                "dest": f"{section}.{knob.name}",
                "default": argparse.SUPPRESS,
                "help": knob.help.replace("%", "%%"),
            }  # argparse formats help with %
            if knob.choices is not None:
                kwargs["choices"] = knob.choices
            if knob.kind == "bool":
                kwargs["action"] = argparse.BooleanOptionalAction
            elif knob.kind == "list":
                kwargs["nargs"] = "+"
            else:
                kwargs["type"] = {"int": int, "float": float}.get(knob.kind, str)
            group.add_argument(f"--{knob.name}", **kwargs)


def add_retired_flags(
    parser: argparse.ArgumentParser, retired: dict[str, str], unsupported: dict[str, str] | None = None
) -> None:
    """Old tools' flags, hidden from --help: answered with a note (retired) or an error (unsupported)."""
    for name in unsupported or {}:
        parser.add_argument(f"--{name}", dest=f"unsupported.{name}", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    for name in retired:
        parser.add_argument(f"--{name}", dest=f"retired.{name}", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def note(message: str) -> None:
    """One line on stderr about a flag, a default or an output; the command goes on."""
    print(f"note: {message}", file=sys.stderr, flush=True)


def answer_retired_flags(args: argparse.Namespace, retired: dict[str, str]) -> None:
    """One note per retired flag given (output_graph is answered where its model is written)."""
    for key, value in vars(args).items():
        if key.startswith("retired.") and key != "retired.output_graph":
            name = key.split(".", 1)[1]
            note(f"--{name} {value}: {retired[name]}")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The config file (if any) with every flag given on the command line laid over it."""
    given = vars(args)
    unsupported = [name.split(".", 1)[1] for name in given if name.startswith("unsupported.")]
    if unsupported:
        raise RetrainError(f"--{unsupported[0]} is not supported: {UNSUPPORTED_FLAGS[unsupported[0]]}")
    config = RunConfig.load(given["config"]) if given.get("config") else RunConfig()
    for section in SECTIONS:
        values = {key.split(".", 1)[1]: value for key, value in given.items() if key.startswith(f"{section}.")}
        if values:
            setattr(config, section, dataclasses.replace(getattr(config, section), **values))
    overrides = given.get("dataset.overrides")
    if overrides and not os.path.isfile(overrides):  # a typo would silently train without the decisions
        raise RetrainError(
            f"--overrides {overrides}: no such file; give the decisions file the app wrote "
            "(overrides/<dataset>.json), or leave the flag out"
        )
    return config


def switch_distortions_on(args: argparse.Namespace, config: RunConfig) -> None:
    """retrain.py's distortion flags distort: give them cached copies to work on when no count was set."""
    given = vars(args)
    distortions = [name for name in DISTORTION_FLAGS if given.get(f"augment.{name}")]
    if distortions and config.augment.augment_copies == 0 and config.augment.class_size == 0:
        config.augment.augment_copies = DISTORTION_COPIES
        note(
            f"distortions on ({' '.join('--' + name for name in distortions)}): {DISTORTION_COPIES} cached "
            "augmented copies of each training image (--augment_copies N to change)"
        )


def add_backbone_flags(parser: argparse.ArgumentParser, verb: str, cache_help: str) -> None:
    """--architecture, --bottleneck_layer, --mirror_view and --bottleneck_dir for a command that is not a whole run:
    which backbone's bottlenecks it works on, and the cache they live in."""
    parser.add_argument(
        "--architecture",
        dest="train.architecture",
        default=argparse.SUPPRESS,
        metavar="NAME",
        help=f"Backbone whose bottlenecks are {verb} (default efficientnet_lite0).",
    )
    parser.add_argument(
        "--bottleneck_layer",
        dest="train.bottleneck_layer",
        default=argparse.SUPPRESS,
        metavar="LAYER",
        help="Backbone layer whose output is the bottleneck.",
    )
    parser.add_argument(
        "--mirror_view",
        dest="train.mirror_view",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help="Each photo's features averaged with its mirror image's, as a run with --mirror_view computes them "
        "(its own cache entries; the Best accuracy preset uses it).",
    )
    parser.add_argument(
        "--bottleneck_dir", dest="output.bottleneck_dir", default=argparse.SUPPRESS, metavar="DIR", help=cache_help
    )


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """--engine ray and its settings (pipeline/scale; needs the extra in requirements-scale.txt)."""
    group = parser.add_argument_group("scale out (Ray)")
    group.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process (default); ray: Ray Data tasks and backbone actors, Parquet bottleneck shards",
    )
    group.add_argument(
        "--ray_address",
        default=None,
        help="Ray cluster (auto or ray://host:10001); default: start a local Ray instance",
    )
    group.add_argument(
        "--ray_actors", type=int, default=None, help="Model actors (default: sized from the cluster's CPUs and GPUs)"
    )
    group.add_argument(
        "--ray_batch_size", type=int, default=128, help="Images per actor call and per Parquet shard (default 128)"
    )


def ray_options(args: argparse.Namespace):
    from pipeline.scale.commands import RayOptions

    if args.ray_batch_size < 1:
        raise RetrainError(f"--ray_batch_size is {args.ray_batch_size}; it must be at least 1")
    return RayOptions(address=args.ray_address, actors=args.ray_actors, batch_size=args.ray_batch_size)


def build_parser() -> argparse.ArgumentParser:
    prog = "retrain-studio" if Path(sys.argv[0]).name == "retrain-studio" else "python -m pipeline"
    parser = argparse.ArgumentParser(
        prog=prog,
        allow_abbrev=False,
        description="Retrain Studio's engine: transfer learning on cached bottlenecks, retrain.py-compatible flags.",
    )
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument("--verbose", action="store_true", help="Show TensorFlow's and absl's own log lines.")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        # allow_abbrev=False: `--image` must never quietly mean `--image_dir`.
        return commands.add_parser(name, help=help, description=help, parents=[common], allow_abbrev=False)

    inspect = command("inspect", "Check a dataset: classes, splits, problems, warnings (JSON).")
    add_config_flags(inspect, ["dataset"])
    cache = command("cache", "Compute and cache bottlenecks for every image.")
    add_config_flags(cache, ["dataset"])
    add_backbone_flags(cache, "cached", "Where cached bottlenecks live (shared between runs).")
    add_engine_flags(cache)
    train = command("train", "A whole run: cache, train, evaluate, export (model.keras first, then the rest).")
    add_config_flags(train, list(SECTIONS))
    train.add_argument("--config", help="A config.json to start from; flags given here override it.")
    add_retired_flags(train, RETIRED_FLAGS, UNSUPPORTED_FLAGS)
    add_engine_flags(train)
    run = command("run", "Run the config.json already in a run directory (used by the app).")
    run.add_argument("--run_dir", required=True, help="The run directory holding config.json.")
    predict = command("predict", "Top-k predictions of a run's checked model (label_image.py's flags work too).")
    predict.add_argument(
        "--model",
        "--graph",
        dest="model",
        help="A run folder, or a model file (.keras) with "
        "labels.txt beside it or --labels; --graph is label_image.py's name for it.",
    )
    predict.add_argument(
        "--labels", help="The labels file (default: the run's labels.txt, or the one beside the model file)."
    )
    predict.add_argument("--top_k", type=int, default=5, help="How many guesses per image.")
    predict.add_argument(
        "--image", action="append", default=[], help="One image file (label_image.py's flag; may be repeated)."
    )
    predict.add_argument("--image_dir", help="Predict every image in this folder ...")
    predict.add_argument("--output_csv", help="... and write one CSV row per image here.")
    predict.add_argument("images", nargs="*", help="Image files; one JSON line each is printed.")
    predict.add_argument("--output", help="With --engine ray: a .parquet or .csv file for the predictions.")
    add_retired_flags(predict, LABEL_IMAGE_RETIRED)
    add_engine_flags(predict)
    suspects = command(
        "suspects", "Likely-mislabelled training and validation images, most suspicious first (last line: JSON list)."
    )
    add_config_flags(suspects, ["dataset"])
    add_backbone_flags(suspects, "compared", "Bottleneck cache (shared with runs; missing ones are computed).")
    suspects.add_argument(
        "--folds", type=int, default=5, help="Out-of-fold models; each image is judged by one that did not see it."
    )
    suspects.add_argument("--top", type=int, default=None, help="Only the N most suspicious images.")
    suspects.add_argument(
        "--seed", dest="train.seed", type=int, default=argparse.SUPPRESS, help="Seed of the fold split."
    )
    return parser


def command_inspect(args: argparse.Namespace) -> None:
    from pipeline.dataset import inspect_report, load_dataset

    dataset = load_dataset(config_from_args(args).dataset, check_images=True, progress=cli_progress())
    print(json.dumps(inspect_report(dataset), indent=2))


def command_cache(args: argparse.Namespace) -> None:
    from pipeline.backbones import load_backbone
    from pipeline.bottlenecks import ExtractItem, cache_bottlenecks
    from pipeline.dataset import load_dataset
    from pipeline.settings import default_bottleneck_dir

    config = config_from_args(args)
    if args.engine == "ray":
        from pipeline.scale.commands import cache_command

        return cache_command(config, ray_options(args))
    dataset = load_dataset(config.dataset, check_images=False, progress=cli_progress())
    backbone = load_backbone(config.train.architecture, config.train.bottleneck_layer, config.train.mirror_view)
    items = [ExtractItem(row.path, row.sha256) for row in dataset.usable().itertuples()]
    progress = cli_progress()
    result = cache_bottlenecks(
        items, backbone, config.output.bottleneck_dir or default_bottleneck_dir(), progress=progress, preparing=progress
    )
    for item, problem in result.problems.items():
        print(f"problem: {item.path}: {problem}", file=sys.stderr)
    print(json.dumps(result.summary()))


def command_train(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    answer_retired_flags(args, RETIRED_FLAGS)
    switch_distortions_on(args, config)
    output_graph = vars(args).get("retired.output_graph")
    if output_graph and (Path(output_graph).is_dir() or output_graph.endswith(("/", os.sep))):
        raise RetrainError(
            f"--output_graph {output_graph} is a folder; give a file name such as "
            f"{Path(output_graph) / 'output_graph.pb'}"
        )
    if not config.output.output_dir:  # retrain.py had no such flag: its tutorial lines must still run
        config.output.output_dir = default_output_dir()
        note(f"output folder: {config.output.output_dir} (--output_dir to choose)")
    if output_graph and "keras" not in config.output.export_formats:
        raise RetrainError("--output_graph gets the Keras model: add keras to --export_formats")
    refuse_foreign_outputs(config, output_graph)
    if output_graph:
        note(
            f"--output_graph {output_graph}: {RETIRED_FLAGS['output_graph']}; the Keras model (backbone + head: "
            f"RGB 0-255 at the backbone's size in, probabilities out) goes to {keras_beside(output_graph)}"
        )
    if args.engine == "ray":
        from pipeline.scale.commands import train_command

        train_command(config, ray_options(args))
    else:
        from pipeline.runs import RunDir

        run = RunDir(config.output.output_dir)
        if run.is_ours():  # a folder that is not a run is refused by retrain, untouched
            run.cancel_request.unlink(missing_ok=True)  # a new run from the command line
        _run_and_print(config, config.output.output_dir)
    if output_graph:
        _copy_model(Path(config.output.output_dir) / "model.keras", keras_beside(output_graph))


def default_output_dir() -> str:
    """runs/run-YYYYmmdd-HHMMSS under the current folder: where a user of retrain.py will look first."""
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, n = Path("runs") / f"run-{stamp}", 1
    while candidate.exists():  # two runs started in the same second
        n += 1
        candidate = Path("runs") / f"run-{stamp}-{n}"
    return str(candidate)


def keras_beside(output_graph: str) -> Path:
    """Where --output_graph's model goes: the same name with .keras (output_graph.pb → output_graph.keras)."""
    path = Path(output_graph)
    return path.with_suffix(".keras") if path.suffix else path.with_name(path.name + ".keras")


def refuse_foreign_outputs(config: RunConfig, output_graph: str | None) -> None:
    """Before any work: the files the user named for outputs are new, or earlier outputs of ours."""
    from pipeline.export import looks_like_our_model
    from pipeline.files import looks_like_labels_file, refuse_to_replace

    if config.output.output_labels:
        refuse_to_replace(config.output.output_labels, looks_like_labels_file, "a labels file")
    if output_graph:
        refuse_to_replace(keras_beside(output_graph), looks_like_our_model, "a model")


def _copy_model(source: Path, target: Path) -> None:
    from pipeline.export import looks_like_our_model
    from pipeline.files import refuse_to_replace, write_bytes_atomic

    refuse_to_replace(target, looks_like_our_model, "a model")  # again: it may have appeared during the run
    write_bytes_atomic(target, source.read_bytes())
    note(
        f"wrote {target}: a Keras 3 model file (.keras; load with keras.saving.load_model); "
        f"predict with: python -m pipeline predict --graph {target} --labels LABELS IMAGE"
    )


def command_run(args: argparse.Namespace) -> None:
    from pipeline.runs import RunDir

    run = RunDir(args.run_dir)
    try:
        config = RunConfig.load(run.config)
    except RetrainError as error:  # the app watches status.json, not this process's stderr
        run.write_status("failed", message=str(error))
        raise
    _run_and_print(config, args.run_dir)


def _run_and_print(config: RunConfig, run_dir: str) -> None:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from pipeline.retrain import retrain

    # TensorFlow's and absl's Python log lines go through tqdm, above the bars, instead of over them.
    with logging_redirect_tqdm(
        loggers=[logging.getLogger(), logging.getLogger("tensorflow"), logging.getLogger("absl")]
    ):
        report = retrain(config, run_dir, echo=cli_progress())
    for name, why in report.extra.get("exports_unavailable", {}).items():
        note(f"{name} export not made: {why}")
    print(report.table())
    if config.output.print_misclassified_test_images:
        print("\nmisclassified test images:")
        for wrong in report.misclassified:
            print(f"  {wrong.file}: {wrong.true_label} → {wrong.predicted_label} ({wrong.confidence:.2f})")
    if warning := report.extra.get("test_split_warning"):
        print(f"\nwarning: {warning}")
    print(
        json.dumps(
            {
                "run_dir": run_dir,
                "test_accuracy": report.test_accuracy,
                "top5_accuracy": report.top5_accuracy,
                "export_parity": report.extra.get("export_parity"),
                "test_split_warning": report.extra.get("test_split_warning"),
            }
        )
    )


def command_predict(args: argparse.Namespace) -> None:
    from pipeline.predict import Predictor, image_files, write_predictions_csv

    answer_retired_flags(args, LABEL_IMAGE_RETIRED)
    if not args.model:
        raise RetrainError("give --model RUN_DIR (or a .keras file; --graph works too)")
    if args.engine == "ray":
        from pipeline.scale.commands import predict_command

        return predict_command(
            args.model, args.image_dir, args.output or args.output_csv, args.top_k, ray_options(args)
        )
    images = args.image + args.images
    if not images and not args.image_dir:
        raise RetrainError("give image files (or --image FILE), or --image_dir DIR (with --output_csv FILE for a CSV)")
    if args.output_csv and not args.image_dir:
        raise RetrainError("--output_csv goes with --image_dir")
    if args.output_csv:
        from pipeline.files import refuse_to_replace
        from pipeline.predict import looks_like_predictions_csv

        refuse_to_replace(args.output_csv, looks_like_predictions_csv, "a predictions CSV")
    predictor = Predictor(args.model, labels=args.labels)
    if predictor.note:
        note(predictor.note)
    if args.image_dir:
        results = predictor.predict_files(image_files(args.image_dir), args.top_k, progress=cli_progress())
        if args.output_csv:
            write_predictions_csv(results, args.output_csv, args.top_k, root=args.image_dir)
            print(
                json.dumps(
                    {
                        "images": len(results),
                        "errors": sum("error" in r for r in results),
                        "output_csv": args.output_csv,
                    }
                )
            )
            return
    else:
        results = predictor.predict_files(images, args.top_k)
    for result in results:
        print(json.dumps(result))


def command_suspects(args: argparse.Namespace) -> None:
    import time

    from pipeline.backbones import load_backbone
    from pipeline.dataset import load_dataset
    from pipeline.settings import default_bottleneck_dir
    from pipeline.suspects import find_suspects

    config = config_from_args(args)
    dataset = load_dataset(config.dataset, check_images=False, progress=cli_progress())
    backbone = load_backbone(config.train.architecture, config.train.bottleneck_layer, config.train.mirror_view)
    started = time.monotonic()
    suspects = find_suspects(
        dataset,
        backbone,
        config.output.bottleneck_dir or default_bottleneck_dir(),
        folds=args.folds,
        top=args.top,
        seed=config.train.seed,
        progress=cli_progress(),
    )
    for problem in dataset.problems:
        print(f"problem: {problem['file']}: {problem['problem']}", file=sys.stderr)
    print(f"{len(suspects)} suspect(s) in {time.monotonic() - started:.1f}s", file=sys.stderr)
    for suspect in suspects[:20]:
        print(
            f"{suspect.file}: {suspect.label} ({suspect.label_probability:.2f}) → {suspect.suggested} "
            f"({suspect.suggested_probability:.2f})"
        )
    if len(suspects) > 20:
        print(f"... and {len(suspects) - 20} more")
    print(json.dumps([suspect.to_dict() for suspect in suspects]))


COMMANDS = {
    "inspect": command_inspect,
    "cache": command_cache,
    "train": command_train,
    "run": command_run,
    "predict": command_predict,
    "suspects": command_suspects,
}


def quiet_tensorflow(verbose: bool) -> None:
    """Silence TensorFlow's C++, absl and Python log lines, unless --verbose."""
    if verbose:
        return
    import logging
    import warnings

    from pipeline.quiet import quiet_tensorflow_import, silence_native_logs

    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    silence_native_logs()
    for name in ("tensorflow", "absl", "keras", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(keras|tensorflow|tf_keras|absl)(\.|$)")
    quiet_tensorflow_import()  # its import prints absl's notice; a command that never needs TensorFlow skips it


def one_line(error: BaseException) -> str:
    """An error's message on one line: a name holding a newline (a class folder, say) must not split it."""
    return str(error).replace("\r", "\\r").replace("\n", "\\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # `run` is the app's: its output goes to run.log, where TensorFlow's own lines help whoever reads it.
    quiet_tensorflow(
        args.verbose or args.command == "run" or str(vars(args).get("retired.logging_verbosity", "")).upper() == "DEBUG"
    )
    try:
        COMMANDS[args.command](args)
    except RunCancelled as cancelled:
        print(f"cancelled: {one_line(cancelled)}", file=sys.stderr)
        return 3
    except RetrainError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
