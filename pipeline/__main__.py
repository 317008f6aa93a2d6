"""The command line: retrain.py's flag names, generated from the one config dataclass.

    python -m pipeline inspect --image_dir DIR
    python -m pipeline cache   --image_dir DIR --bottleneck_dir DIR
    python -m pipeline train   --image_dir DIR --output_dir RUN_DIR [--how_many_training_steps 4000 ...]
    python -m pipeline run     --run_dir RUN_DIR            # a run from its config.json (the app uses this)
    python -m pipeline predict --model RUN_DIR IMAGE...     # or --image_dir DIR --output_csv FILE
    python -m pipeline suspects --image_dir DIR [--top N]  # likely-mislabeled images, most suspicious first

Heavy modules (TensorFlow) are imported per command, so `inspect` answers quickly. A user's
mistake prints one line and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from pipeline.config import AugmentConfig, DatasetConfig, OutputConfig, RunConfig, TrainConfig
from pipeline.errors import RetrainError, RunCancelled
from pipeline.progress import print_progress

# retrain.py flags whose meaning does not carry over, with what to do instead.
UNSUPPORTED_FLAGS = {
    "tfhub_module": "TF Hub modules are not used; choose a backbone with --architecture (efficientnet_lite0 works "
                    "offline; inception_v3, mobilenet_v2, resnet50, or PATH.keras with --bottleneck_layer)",
    "output_graph": "frozen graphs are gone from TF2; the run exports model.keras, saved_model/1/ and model.tflite "
                    "into --output_dir",
    "final_tensor_name": "the exported models name their output 'probabilities'; no tensor name is needed",
    "intermediate_output_graphs_dir": "intermediate graphs are not written; each run keeps its best weights",
    "intermediate_store_frequency": "intermediate graphs are not written; each run keeps its best weights",
    "model_dir": "backbone weights need no folder: efficientnet_lite0 ships with the install and Keras "
                 "backbones use Keras's own cache",
}
SECTIONS = {"dataset": DatasetConfig, "augment": AugmentConfig, "train": TrainConfig, "output": OutputConfig}


def add_config_flags(parser: argparse.ArgumentParser, sections: list[str]) -> None:
    """One flag per config field, named as the field, with the field's help."""
    for section in sections:
        group = parser.add_argument_group(section)
        for field in dataclasses.fields(SECTIONS[section]):
            kwargs: dict[str, Any] = {"dest": f"{section}.{field.name}", "default": argparse.SUPPRESS,
                                      "help": field.metadata.get("help")}
            if "choices" in field.metadata:
                kwargs["choices"] = field.metadata["choices"]
            if field.type in ("bool", bool):
                kwargs["action"] = argparse.BooleanOptionalAction
            elif field.type.startswith("list"):
                kwargs["nargs"] = "+"
            else:
                kwargs["type"] = {"int": int, "float": float}.get(field.type.split(" ")[0], str)
            group.add_argument(f"--{field.name}", **kwargs)


def add_unsupported_flags(parser: argparse.ArgumentParser) -> None:
    for name in UNSUPPORTED_FLAGS:
        parser.add_argument(f"--{name}", dest=f"unsupported.{name}", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


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
    return config


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """--engine ray and its settings (pipeline/scale; needs the extra in requirements-scale.txt)."""
    group = parser.add_argument_group("scale out (Ray)")
    group.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="local: this process (default); ray: Ray Data tasks and backbone actors, "
                            "Parquet bottleneck shards")
    group.add_argument("--ray_address", default=None, help="Ray cluster (auto or ray://host:10001); "
                       "default: start a local Ray instance")
    group.add_argument("--ray_actors", type=int, default=None, help="Model actors (default: sized from the "
                       "cluster's CPUs and GPUs)")


def ray_options(args: argparse.Namespace):
    from pipeline.scale.commands import RayOptions

    return RayOptions(address=args.ray_address, actors=args.ray_actors)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description="Retrain Studio's engine: "
                                     "transfer learning on cached bottlenecks, retrain.py-compatible flags.")
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="Check a dataset: classes, splits, problems, warnings (JSON).")
    add_config_flags(inspect, ["dataset"])
    cache = commands.add_parser("cache", help="Compute and cache bottlenecks for every image.")
    add_config_flags(cache, ["dataset"])
    cache.add_argument("--architecture", dest="train.architecture", default=argparse.SUPPRESS)
    cache.add_argument("--bottleneck_layer", dest="train.bottleneck_layer", default=argparse.SUPPRESS)
    cache.add_argument("--bottleneck_dir", dest="output.bottleneck_dir", default=argparse.SUPPRESS)
    add_engine_flags(cache)
    train = commands.add_parser("train", help="A whole run: cache, train, evaluate, export.")
    add_config_flags(train, list(SECTIONS))
    train.add_argument("--config", help="A config.json to start from; flags given here override it.")
    add_unsupported_flags(train)
    add_engine_flags(train)
    run = commands.add_parser("run", help="Run the config.json already in a run directory (used by the app).")
    run.add_argument("--run_dir", required=True)
    predict = commands.add_parser("predict", help="Top-k predictions of a finished run's model.")
    predict.add_argument("--model", required=True, help="The run directory (holds model.keras and labels.txt).")
    predict.add_argument("--top_k", type=int, default=5)
    predict.add_argument("--image_dir", help="Predict every image in this folder ...")
    predict.add_argument("--output_csv", help="... and write one CSV row per image here.")
    predict.add_argument("images", nargs="*", help="Image files; one JSON line each is printed.")
    predict.add_argument("--output", help="With --engine ray: a .parquet or .csv file for the predictions.")
    add_engine_flags(predict)
    suspects = commands.add_parser("suspects", help="Likely-mislabelled training and validation images, most "
                                   "suspicious first (last line: JSON list).")
    add_config_flags(suspects, ["dataset"])
    suspects.add_argument("--architecture", dest="train.architecture", default=argparse.SUPPRESS, metavar="NAME",
                          help="Backbone whose bottlenecks are compared (default efficientnet_lite0).")
    suspects.add_argument("--bottleneck_layer", dest="train.bottleneck_layer", default=argparse.SUPPRESS,
                          metavar="LAYER", help="Backbone layer whose output is the bottleneck.")
    suspects.add_argument("--bottleneck_dir", dest="output.bottleneck_dir", default=argparse.SUPPRESS,
                          metavar="DIR", help="Bottleneck cache (shared with runs; missing ones are computed).")
    suspects.add_argument("--folds", type=int, default=5, help="Out-of-fold models; each image is judged by one "
                          "that did not see it.")
    suspects.add_argument("--top", type=int, default=None, help="Only the N most suspicious images.")
    suspects.add_argument("--seed", dest="train.seed", type=int, default=argparse.SUPPRESS,
                          help="Seed of the fold split.")
    return parser


def command_inspect(args: argparse.Namespace) -> None:
    from pipeline.dataset import inspect_report, load_dataset

    dataset = load_dataset(config_from_args(args).dataset, check_images=True, progress=print_progress)
    print(json.dumps(inspect_report(dataset), indent=2))


def command_cache(args: argparse.Namespace) -> None:
    from pipeline.backbones import load_backbone
    from pipeline.bottlenecks import ExtractItem, cache_bottlenecks
    from pipeline.dataset import load_dataset
    from pipeline.runs import cache_root

    config = config_from_args(args)
    if args.engine == "ray":
        from pipeline.scale.commands import cache_command

        return cache_command(config, ray_options(args))
    dataset = load_dataset(config.dataset, check_images=False, progress=print_progress)
    backbone = load_backbone(config.train.architecture, config.train.bottleneck_layer)
    items = [ExtractItem(row.path, row.sha256) for row in dataset.usable().itertuples()]
    result = cache_bottlenecks(items, backbone, config.output.bottleneck_dir or cache_root() / "bottlenecks",
                               progress=print_progress)
    for item, problem in result.problems.items():
        print(f"problem: {item.path}: {problem}", file=sys.stderr)
    print(json.dumps(result.summary()))


def command_train(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    if not config.output.output_dir:
        raise RetrainError("--output_dir is required: the run directory for config, metrics, report and exports")
    if args.engine == "ray":
        from pipeline.scale.commands import train_command

        return train_command(config, ray_options(args))
    from pipeline.runs import RunDir

    RunDir(config.output.output_dir).cancel_request.unlink(missing_ok=True)  # a new run from the command line
    _run_and_print(config, config.output.output_dir)


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
    from pipeline.retrain import retrain

    report = retrain(config, run_dir, echo=print_progress)
    print(report.table())
    if config.output.print_misclassified_test_images:
        print("\nmisclassified test images:")
        for wrong in report.misclassified:
            print(f"  {wrong.file}: {wrong.true_label} → {wrong.predicted_label} ({wrong.confidence:.2f})")
    print(json.dumps({"run_dir": run_dir, "test_accuracy": report.test_accuracy,
                      "top5_accuracy": report.top5_accuracy, "export_parity": report.extra.get("export_parity")}))


def command_predict(args: argparse.Namespace) -> None:
    from pipeline.predict import Predictor, image_files, write_predictions_csv

    if args.engine == "ray":
        from pipeline.scale.commands import predict_command

        return predict_command(args.model, args.image_dir, args.output or args.output_csv, args.top_k,
                               ray_options(args))
    if not args.images and not args.image_dir:
        raise RetrainError("give image files, or --image_dir DIR (with --output_csv FILE for a CSV)")
    if args.output_csv and not args.image_dir:
        raise RetrainError("--output_csv goes with --image_dir")
    predictor = Predictor(args.model)
    if args.image_dir:
        results = predictor.predict_files(image_files(args.image_dir), args.top_k)
        if args.output_csv:
            write_predictions_csv(results, args.output_csv, args.top_k, root=args.image_dir)
            print(json.dumps({"images": len(results), "errors": sum("error" in r for r in results),
                              "output_csv": args.output_csv}))
            return
    else:
        results = predictor.predict_files(args.images, args.top_k)
    for result in results:
        print(json.dumps(result))


def command_suspects(args: argparse.Namespace) -> None:
    import time

    from pipeline.backbones import load_backbone
    from pipeline.dataset import load_dataset
    from pipeline.runs import cache_root
    from pipeline.suspects import find_suspects

    config = config_from_args(args)
    dataset = load_dataset(config.dataset, check_images=False, progress=print_progress)
    backbone = load_backbone(config.train.architecture, config.train.bottleneck_layer)
    started = time.monotonic()
    suspects = find_suspects(dataset, backbone, config.output.bottleneck_dir or cache_root() / "bottlenecks",
                             folds=args.folds, top=args.top, seed=config.train.seed, progress=print_progress)
    for problem in dataset.problems:
        print(f"problem: {problem['file']}: {problem['problem']}", file=sys.stderr)
    print(f"{len(suspects)} suspect(s) in {time.monotonic() - started:.1f}s", file=sys.stderr)
    for suspect in suspects[:20]:
        print(f"{suspect.file}: {suspect.label} ({suspect.label_probability:.2f}) → {suspect.suggested} "
              f"({suspect.suggested_probability:.2f})")
    if len(suspects) > 20:
        print(f"... and {len(suspects) - 20} more")
    print(json.dumps([suspect.to_dict() for suspect in suspects]))


COMMANDS = {"inspect": command_inspect, "cache": command_cache, "train": command_train, "run": command_run,
            "predict": command_predict, "suspects": command_suspects}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except RunCancelled as cancelled:
        print(f"cancelled: {cancelled}", file=sys.stderr)
        return 3
    except RetrainError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
