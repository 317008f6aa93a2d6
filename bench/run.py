"""Side-by-side benchmarks of Retrain Studio's speed and accuracy claims, in one run.

    python bench/run.py            # all of flowers: the claims as stated (10–15 minutes on 2 cores)
    python bench/run.py --quick    # the same measurements on a fixed subset, in under 5 minutes

Writes bench/results.md (figure, value, goal, met?, and the machine) and prints the figures as one
JSON object on the last line of stdout; progress goes to stderr. Caches are fresh temporary folders,
so "cold" means cold; the built backbone (a per-machine cache, not a per-run one) is reused.

Measurements run in the order data flows — extraction, the first model, reruns on its warm cache,
head training, prediction, the cache command's memory — and each ratio's two sides run interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: make `bench` and `pipeline` importable
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Our runs must not queue for a training slot behind someone else's run: waiting is not speed.
os.environ.setdefault("RETRAIN_STUDIO_MAX_JOBS", "64")

from bench import (  # noqa: E402
    backbones,
    export_parity,
    extraction,
    hostile_zip,
    predict_runtimes,
    scale,
    training,
    whole_runs,
)
from bench.modes import (  # noqa: E402
    DEFAULT_BACKBONE,
    GROCERY,
    MODES,
    SMOKE_LAYER,
    Mode,
    evenly_spaced,
    prepare_dataset,
    smoke_backbone,
)
from bench.report import SUBSET_PREFIX, load_average, machine, write_markdown  # noqa: E402
from bench.timing import interleaved, log, median  # noqa: E402
from pipeline.backbones.runtime import LITERT, runtime_for  # noqa: E402
from pipeline.backbones.side_by_side import LITE0_AND_LITE1  # noqa: E402

DEFAULT_OUTPUT = REPO / "bench" / "results.md"
# The JSON keys, in the order of the table (`flowers_*` become `quick_flowers_*` on a subset).
FIGURES = [
    "forward_images_per_second",
    "extract_images_per_second",
    "extract_vs_forward",
    "litert_extract_vs_tf_forward",
    "per_image_images_per_second",
    "extract_vs_per_image",
    "frozen_fit_epoch_seconds",
    "cache_vs_frozen_fit",
    "head_4000_steps_seconds",
    "warm_rerun_seconds",
    "augmented_warm_vs_plain_warm",
    "flowers_test_accuracy",
    "flowers_test_accuracy_seed0",
    "flowers_first_model_seconds",
    "predict_p50_ms",
    "predict_p95_ms",
    "cache_peak_rss_mb",
    "flowers_test_accuracy_lite2",
    "grocery_test_accuracy_lite2",
    "flowers_test_accuracy_pair_mirror_seed0",
    "flowers_test_accuracy_pair_mirror_min",
    "hostile_zip_peak_rss_mb",
    "flowers_bytes_top1_agreement",
    "flowers_bytes_max_prob_diff",
]
FIGURES += list(scale.FIGURES)  # the Ray engine's (bench/scale.py): null when the scale extra is not installed


# Every stage, in the order they run (`--stages` picks some; a figure of a stage not run is "not measured").
STAGES = [
    "extraction",
    "first_model",
    "reruns",
    "head_steps",
    "frozen_fit",
    "prediction",
    "export_parity",
    "cache_memory",
    "backbones",
    "pair",
    "grocery",
    "hostile_zip",
    "scale",
]


class Benchmark:
    """One benchmark run: the mode, its dataset and backbone, and the figures found so far."""

    def __init__(self, mode: Mode, workdir: Path):
        from pipeline.backbones import load_backbone
        from pipeline.config import DatasetConfig, TrainConfig
        from pipeline.dataset import load_dataset

        self.mode, self.workdir = mode, workdir
        self.image_dir = prepare_dataset(mode, workdir)
        self.architecture, self.layer = (
            (smoke_backbone(workdir), SMOKE_LAYER) if mode.name == "smoke" else (DEFAULT_BACKBONE, None)
        )
        # With the default settings' views, so the first model's cache is what the later stages read.
        self.backbone = load_backbone(self.architecture, self.layer, TrainConfig().mirror_view)
        dataset = load_dataset(DatasetConfig(image_dir=str(self.image_dir)), check_images=False)
        self.rows = dataset.usable()
        self.classes = sorted(self.rows["label"].unique())
        self.bottleneck_dir = workdir / "bottlenecks"  # filled cold by the first model, warm after
        self.first_run_dir: Path | None = None
        self.figures: dict[str, float] = {}
        self.extras: dict[str, float] = {}
        self.how: dict[str, str] = {}
        self.loads: list[float] = []  # the 1-minute load average as each stage starts
        self.failures: dict[str, str] = {}  # stage → why it failed
        self.per_backbone: dict[str, dict[str, float]] = {}  # architecture → figures for the table and the picker
        self.backbone_names: tuple[str, ...] = backbones.LITES  # which backbones the per-backbone stage compares

    def stage(self, message: str) -> None:
        self.loads.append(os.getloadavg()[0])
        log(f"{message} (load average {self.loads[-1]:.1f})")

    def items(self, rows):
        from pipeline.bottlenecks import ExtractItem

        return [ExtractItem(row.path, row.sha256) for row in rows.itertuples()]

    def sample(self, count: int):
        """`count` usable images spread over the whole dataset, always the same ones."""
        return self.rows.iloc[evenly_spaced(list(range(len(self.rows))), count)]

    def name(self, figure: str) -> str:
        return SUBSET_PREFIX + figure if self.mode.subset and figure.startswith("flowers_") else figure

    def record(self, figure: str, value: float, how: str, extra: bool = False) -> None:
        (self.extras if extra else self.figures)[figure] = round(float(value), 4)
        self.how[figure] = how
        log(f"{figure} = {value:.4g}")

    # ---- Extraction: the forward pass, our cold cache, retrain.py's loop -----------------------------------------

    def measure_extraction(self) -> None:
        mode = self.mode
        # One item per distinct photo (flowers has a few duplicates): each one is really computed.
        items = list({item.sha256: item for item in self.items(self.sample(mode.speed_images))}.values())
        paths = [item.path for item in evenly_spaced(items, mode.per_image_images)]
        eager_paths = paths[: max(mode.per_image_images // 4, 2)]
        self.stage(f"extraction: {len(items)} images, {len(paths)} one at a time, {mode.reps} repetitions")
        forward = extraction.ForwardPass(self.backbone, extraction.decode_all(items, self.backbone.input_size))
        per_image = extraction.PerImageLoop(self.backbone)
        runs = interleaved(
            mode.reps,
            {
                "forward": lambda _: forward.throughput(),
                "extract": lambda _: extraction.extract_throughput(items, self.backbone, self.workdir),
                "per_image": lambda _: per_image.throughput(paths),
                "per_image_eager": lambda _: per_image.throughput(eager_paths, eager=True),
            },
        )
        rate = {name: median([run.per_second for run in values]) for name, values in runs.items()}
        cpu = {name: median([run.cpu_ms_per_image for run in values]) for name, values in runs.items()}
        reps = f"median of {mode.reps}"
        self.record(
            "forward_images_per_second",
            rate["forward"],
            f"compiled forward pass, batches of 32 decoded images in memory; {len(items)} images, {reps}",
        )
        self.record(
            "extract_images_per_second",
            rate["extract"],
            f"`cache_bottlenecks` into a fresh folder, same {len(items)} JPEGs; {reps}",
        )
        self.record("extract_vs_forward", rate["extract"] / rate["forward"], "ratio of the medians above")
        if runtime_for(self.architecture) == LITERT:  # extraction ran on LiteRT, the forward pass on TensorFlow
            self.record(
                "litert_extract_vs_tf_forward",
                rate["extract"] / rate["forward"],
                "extraction from the JPEG files on LiteRT (XNNPACK, 2 threads) / TensorFlow's compiled "
                "batch-32 forward pass on decoded images: the two figures above, interleaved",
            )
        self.record(
            "per_image_images_per_second",
            rate["per_image"],
            f"read, decode+resize (one graph call), model on a batch of 1 (compiled, like `sess.run`); "
            f"{len(paths)} images, {reps}",
        )
        self.record("extract_vs_per_image", rate["extract"] / rate["per_image"], "ratio of the medians")
        self.record(
            "per_image_eager_images_per_second",
            rate["per_image_eager"],
            f"the same loop with an eager Keras call per image; {len(eager_paths)} images, {reps}",
            extra=True,
        )
        self.record(
            "extract_vs_per_image_eager", rate["extract"] / rate["per_image_eager"], "ratio of the medians", extra=True
        )
        for name in ("forward", "extract", "per_image", "per_image_eager"):
            self.record(
                f"{name}_cpu_ms_per_image",
                cpu[name],
                "CPU time of this process per image (all threads): the cost, whatever the load",
                extra=True,
            )
        self.record(
            "extract_vs_forward_cpu",
            cpu["forward"] / cpu["extract"],
            "forward CPU ms / extraction CPU ms: the forward pass's share of extraction's work",
            extra=True,
        )

    # ---- Whole runs: the first model, then reruns on its warm cache ----------------------------------------------

    def config(self, train: dict | None = None, augment: dict | None = None):
        return whole_runs.run_config(
            self.image_dir,
            self.bottleneck_dir,
            self.architecture,
            self.layer,
            {**self.mode.train, **(train or {})},
            augment,
        )

    def measure_first_model(self) -> None:
        self.stage(f"first model: {len(self.rows)} images, cold bottleneck cache, default settings")
        first = whole_runs.timed_run(self.config(), self.workdir / "runs" / "first")
        self.first_run_dir = first.run_dir
        timings, cache = first.report.extra["timings"], first.report.extra["cache"]["originals"]
        where = f"{len(self.rows)} images" + (f" ({self.mode.per_class} per class)" if self.mode.per_class else "")
        # One seed is one draw of dropout and shuffling (about +-0.01 here): report the median of three.
        runs = self.workdir / "runs"
        accuracies = [first.report.test_accuracy] + [
            whole_runs.timed_run(self.config({"seed": seed}), runs / f"seed-{seed}").report.test_accuracy
            for seed in (1, 2)
        ]
        self.record(
            self.name("flowers_test_accuracy"),
            median(accuracies),
            f"default settings, {where}; {first.report.extra.get('evaluated_on', 'test')} split; median over "
            f"seeds 0-2 ({', '.join(f'{a:.4f}' for a in accuracies)}; seed 0 is the cold run)",
        )
        self.record(
            self.name("flowers_test_accuracy_seed0"),
            first.report.test_accuracy,
            f"default settings, seed 0, {where}; chosen on validation, test split seen once",
        )
        self.record(
            self.name("flowers_first_model_seconds"),
            first.seconds,
            f"`retrain()` with a cold bottleneck cache, {where}; caching {timings['caching_seconds']:.0f} s, "
            f"training {timings['training_seconds']:.0f} s, export {timings['export_seconds']:.0f} s",
        )
        self.record(
            "first_model_extract_images_per_second",
            cache["images_per_second"],
            f"the caching stage of that run ({cache['computed']} images)",
            extra=True,
        )

    def measure_reruns(self) -> None:
        mode = self.mode
        self.stage(f"warm reruns: augmented copies first (cold), then {mode.rerun_reps} plain and augmented reruns")
        cold = whole_runs.timed_run(self.config(augment=mode.augment), self.workdir / "runs" / "augmented-cold")
        self.record(
            "augmented_first_run_seconds",
            cold.seconds,
            f"the run that caches the augmented copies ({mode.augment})",
            extra=True,
        )
        runs = self.workdir / "runs"
        results = interleaved(
            mode.rerun_reps,
            {
                "plain": lambda rep: whole_runs.timed_process_run(
                    self.config(whole_runs.rerun_hyperparameters(rep)), runs / f"plain-{rep}"
                ),
                "augmented": lambda rep: whole_runs.timed_process_run(
                    self.config(whole_runs.rerun_hyperparameters(rep), mode.augment), runs / f"augmented-{rep}"
                ),
            },
        )
        plain, augmented = (median([run.report_seconds for run in results[kind]]) for kind in ("plain", "augmented"))
        reps = f"median of {mode.rerun_reps}, each with new learning rate and dropout"
        self.record(
            "warm_rerun_seconds",
            plain,
            "a fresh `python -m pipeline run` process (the app's way), warm cache, from its start until report.json "
            f"(the trained head and its scores) is written; {reps}",
        )
        self.record(
            "warm_rerun_model_seconds",
            median(
                [
                    run.report_seconds - run.stage_seconds("report") + run.stage_seconds("model_ready")
                    for run in results["plain"]
                ]
            ),
            f"the same reruns until model.keras is written, reloaded and checked; {reps}",
            extra=True,
        )
        self.record(
            "warm_rerun_all_exports_seconds",
            median([run.total_seconds for run in results["plain"]]),
            f"the same reruns until the process ends with every export checked; {reps}",
            extra=True,
        )
        self.record(
            "augmented_warm_vs_plain_warm",
            augmented / plain,
            f"the same with {mode.augment}, copies cached: {augmented:.1f} s / {plain:.1f} s",
        )
        for kind in ("plain", "augmented"):
            self.record(
                self.name(f"flowers_{kind}_rerun_test_accuracy"),
                median([run.report.test_accuracy for run in results[kind]]),
                f"test accuracy of the {kind} warm reruns above (median)",
                extra=True,
            )

    # ---- Head training on the cache, and the guide's frozen-base fit ---------------------------------------------

    def cached_split(self, split: str, vectors):
        import numpy as np

        rows = self.rows[self.rows["split"] == split]
        x = np.stack([vectors[item] for item in self.items(rows)])
        return x, np.array([self.classes.index(label) for label in rows["label"]])

    def measure_head_steps(self) -> None:
        from pipeline.bottlenecks import cache_bottlenecks
        from pipeline.config import TrainConfig
        from pipeline.train import HeadData, schedule

        vectors = cache_bottlenecks(self.items(self.rows), self.backbone, self.bottleneck_dir).vectors
        data = HeadData(
            *self.cached_split("train", vectors), *self.cached_split("validation", vectors), len(self.classes)
        )
        steps = self.mode.head_steps
        self.stage(f"head training: {steps} steps on {len(data.x_train)} cached bottlenecks")
        seconds = interleaved(self.mode.reps, {"head": lambda _: training.head_steps_seconds(data, steps)})
        interval, _ = schedule(TrainConfig(how_many_training_steps=steps), len(data.x_train))
        self.record(
            "head_4000_steps_seconds",
            median(seconds["head"]),
            f"`train_head`, {steps} steps, batch 32, early stopping off, validating every {interval} steps "
            f"on {len(data.x_val)} images; {len(data.x_train)} training bottlenecks; "
            f"median of {self.mode.reps}",
        )

    def measure_frozen_fit(self) -> None:
        from pipeline.backbones import load_backbone
        from pipeline.config import TrainConfig

        rows = self.sample(self.mode.fit_images)
        items, labels = self.items(rows), [self.classes.index(label) for label in rows["label"]]
        self.stage(f"frozen-base fit against the cache: {len(items)} examples, {self.mode.reps} repetitions")
        fresh = load_backbone(self.architecture, self.layer, TrainConfig().mirror_view)  # the same views as the cache
        frozen = training.FrozenBaseFit(fresh, [i.path for i in items], labels, len(self.classes))
        seconds = interleaved(
            self.mode.reps,
            {
                "frozen_fit": lambda _: frozen.epoch_seconds(),
                "cache": lambda _: training.cache_epoch_seconds(
                    items, labels, len(self.classes), self.backbone, str(self.bottleneck_dir)
                ),
            },
        )
        fit, cache = median(seconds["frozen_fit"]), median(seconds["cache"])
        self.record(
            "frozen_fit_epoch_seconds",
            fit,
            f"Keras guide: frozen base + new head, `model.fit` 1 epoch over {len(items)} JPEGs "
            f"(tf.data decode+resize); median of {self.mode.reps}",
        )
        self.record(
            "cache_vs_frozen_fit",
            fit / cache,
            f"that / reading the same {len(items)} bottlenecks from the cache and training a new head "
            f"1 epoch ({cache:.2f} s)",
        )

    # ---- Using the model, and the cache command's memory ---------------------------------------------------------

    def measure_prediction(self) -> None:
        paths = list(self.sample(self.mode.predictions)["path"])
        self.stage(f"prediction: {len(paths)} single images through the first model")
        times = whole_runs.prediction_milliseconds(self.first_run_dir, paths)
        how = f"file bytes → `Predictor.predict_bytes` top-5, as the Predict page does; {len(times)} images"
        self.record("predict_p50_ms", whole_runs.percentile(times, 50), how)
        self.record("predict_p95_ms", whole_runs.percentile(times, 95), how)
        self.measure_predict_runtimes(paths)

    def measure_predict_runtimes(self, paths: list[str]) -> None:
        """The same photos with the backbone on LiteRT and on TensorFlow, alternately (extras; no goal)."""
        if runtime_for("classifier") != LITERT:
            log("prediction on LiteRT not measured: ai-edge-litert is not installed here")
            return
        times = predict_runtimes.latencies_by_runtime(self.first_run_dir, paths)
        p50 = {name: whole_runs.percentile(values, 50) for name, values in times.items()}
        how = f"`Predictor.predict_bytes` top-5, {len(paths)} photos, the two Predictors alternating photo by photo"
        self.record(
            "predict_p50_ms_litert", p50["litert"], f"backbone on LiteRT, the run's head in NumPy; {how}", extra=True
        )
        self.record("predict_p50_ms_tensorflow", p50["tensorflow"], f"the whole model on TensorFlow; {how}", extra=True)
        self.record(
            "predict_tensorflow_vs_litert",
            p50["tensorflow"] / p50["litert"],
            "predict p50 on TensorFlow / on LiteRT (above 1: LiteRT answers sooner)",
            extra=True,
        )

    def measure_export_parity(self) -> None:
        test = self.rows[self.rows["split"] == "test"]
        run_dir = self.first_run_dir
        self.stage(
            f"exports against predict on the {len(test)} test images"
            + ("" if run_dir else ", after a default run (no first model)")
        )
        if run_dir is None:
            run_dir = whole_runs.timed_run(self.config(), self.workdir / "runs" / "exports").run_dir
        whole_runs.add_onnx_export(run_dir)
        figures = export_parity.measure(run_dir, list(test["path"]))
        where = f"the {len(test)} test images of {self.describe_dataset()}, the first model"
        self.record(
            self.name("flowers_bytes_top1_agreement"),
            figures.pop("bytes_top1_agreement"),
            f"SavedModel `serving_bytes` (TensorFlow decodes) vs `predict` (Pillow): same top-1; {where}",
        )
        self.record(
            self.name("flowers_bytes_max_prob_diff"),
            figures.pop("bytes_max_prob_diff"),
            f"largest difference in any probability, same comparison; {where}",
        )
        for name, value in figures.items():  # model.keras on whole photos vs predict's pixel path; the rest prepared
            self.record(self.name(f"flowers_{name}"), value, f"vs predict; {where}", extra=True)

    def measure_cache_memory(self) -> None:
        self.stage(f"memory: a cold `python -m pipeline cache` over {len(self.rows)} images as a child process")
        usage = whole_runs.cache_command_usage(self.image_dir, self.workdir, self.architecture, self.layer)
        self.record(
            "cache_peak_rss_mb",
            usage.peak_rss_mb,
            f"peak RSS of `python -m pipeline cache` (cold) over {len(self.rows)} images, os.wait4",
        )
        self.record(
            "cache_command_seconds", usage.seconds, "that command's wall time, Python start-up included", extra=True
        )

    def measure_hostile_zip(self) -> None:
        from pipeline.images import HOSTED_MAX_PIXELS

        cap = 8_000_000 if self.mode.name == "smoke" else HOSTED_MAX_PIXELS
        self.stage(f"memory: checking a zip of {hostile_zip.IMAGES} PNGs of {cap:,} pixels each as the app does")
        budgeted, unbounded = hostile_zip.measure(self.workdir, cap)
        how = (
            f"peak RSS of a process set up as app.py, unpacking and checking a {hostile_zip.IMAGES}-PNG zip "
            f"(each a few KB, {cap:,} pixels) with the shipped decode budget"
        )
        self.record("hostile_zip_peak_rss_mb", budgeted.peak_rss_mb, how)
        self.record(
            "hostile_zip_unbudgeted_peak_rss_mb",
            unbounded.peak_rss_mb,
            "the same with a budget large enough for all four at once",
            extra=True,
        )
        self.record(
            "hostile_zip_unbudgeted_vs_budgeted",
            unbounded.decode_mb / max(budgeted.decode_mb, 1.0),
            "memory the check added (over the process after imports): without the budget / with it",
            extra=True,
        )

    # ---- Per backbone: both runtimes, accuracy, size, latency; and Lite2 on grocery --------------------------------

    def measure_backbones(self) -> None:
        mode = self.mode
        names = self.backbone_names if mode.name != "smoke" else (self.architecture,)
        items = list({item.sha256: item for item in self.items(self.sample(mode.backbone_images))}.values())
        paths = list(self.sample(mode.predictions)["path"])
        for name in names:
            self.stage(
                f"backbone {name}: cold extraction of {len(items)} images on LiteRT and TensorFlow, then a default run"
            )
            rates = backbones.extraction_rates(items, name, mode.reps, self.workdir)
            # The default backbone's cache is warm from the first model: its run costs no second extraction.
            warm = self.bottleneck_dir if name == self.architecture and self.first_run_dir else None
            run = backbones.default_run(self.image_dir, name, self.workdir, paths, mode.train, warm)
            self.per_backbone[name] = {
                "extract_litert_images_per_second": round(rates["litert"], 1),
                "extract_tf_images_per_second": round(rates["tensorflow"], 1),
                self.name("flowers_test_accuracy"): round(run["test_accuracy"], 4),
                "model_mb": round(run["model_mb"], 1),
                "predict_p50_ms": round(run["predict_p50_ms"], 1),
            }
            log(f"{name}: {self.per_backbone[name]}")
        if "efficientnet_lite2" in self.per_backbone:
            self.record(
                self.name("flowers_test_accuracy_lite2"),
                self.per_backbone["efficientnet_lite2"][self.name("flowers_test_accuracy")],
                f"default settings with --architecture efficientnet_lite2, seed 0, {len(self.rows)} images",
            )

    def measure_pair(self) -> None:
        """The most accurate offline recipe found (Lite0 + Lite1 side by side, mirror view): seeds 0-4."""
        architecture = LITE0_AND_LITE1
        if self.mode.name == "smoke":  # two real backbones: far beyond a smoke test's budget
            log("pair: skipped in smoke mode, its figures stay null")
            return
        self.stage(f"pair: {architecture} with --mirror_view, cold cache, seeds 0-4")
        train = {**self.mode.train, "mirror_view": True}
        config = whole_runs.run_config(self.image_dir, self.workdir / "bottlenecks-pair", architecture, None, train)
        config.output.export_formats = ["keras"]  # accuracy is the figure; the formats are measured elsewhere
        accuracies = []
        for seed in range(5):
            config.train.seed = seed
            result = whole_runs.timed_run(config, self.workdir / "runs" / f"pair-seed-{seed}")
            accuracies.append(result.report.test_accuracy)
            log(f"pair seed {seed}: test accuracy {accuracies[-1]:.4f}, {result.seconds:.0f} s")
        every = ", ".join(f"{a:.4f}" for a in accuracies)
        self.record(
            self.name("flowers_test_accuracy_pair_mirror_seed0"),
            accuracies[0],
            f"defaults but --architecture {architecture} --mirror_view, seed 0, {len(self.rows)} images",
        )
        self.record(
            self.name("flowers_test_accuracy_pair_mirror_min"),
            min(accuracies),
            f"the same, lowest of seeds 0-4 ({every})",
        )

    def measure_grocery(self) -> None:
        if not self.mode.grocery:
            return
        if not GROCERY.is_dir():
            raise RuntimeError(f"{GROCERY} not found")
        self.stage("grocery: a default Lite2 run on the official train/val/test split")
        config = whole_runs.run_config(GROCERY, self.workdir / "bottlenecks-grocery", "efficientnet_lite2", None)
        result = whole_runs.timed_run(config, self.workdir / "runs" / "grocery-lite2")
        self.record(
            "grocery_test_accuracy_lite2",
            result.report.test_accuracy,
            f"default settings, efficientnet_lite2, seed 0, official split; whole run {result.seconds:.0f} s",
        )

    # ---- The Ray engine (bench/scale.py): its overhead, 1 vs 2 actors, a simulated two-node cluster --------------

    def measure_scale(self) -> None:
        from pipeline.errors import RetrainError
        from pipeline.scale.cluster import require_ray

        try:
            require_ray()
        except RetrainError as missing:  # an optional extra: its figures stay null, nothing failed
            log(f"scale: skipped, its figures stay null: {missing}")
            return
        images, batch = scale.MODES[self.mode.name]
        self.stage(
            f"scale: {images} images on a local Ray instance (1 and 2 actors) and the local engine, "
            "then on a simulated two-node cluster"
        )
        figures = scale.measure(self.image_dir, images, self.architecture, self.layer, batch)
        for name, value in figures.items():
            if isinstance(value, int | float) and name != "cores":
                self.record(
                    name,
                    value,
                    scale.FIGURES.get(name, "bench/scale.py (see its docstring)"),
                    extra=name not in scale.FIGURES,
                )

    def describe_dataset(self) -> str:
        if self.mode.per_class is None:
            return f"{self.image_dir} ({len(self.rows)} images)"
        if self.mode.per_class == 0:
            return f"{len(self.rows)} generated images, tiny backbone (smoke: the figures mean nothing)"
        return f"flowers, {self.mode.per_class} per class ({len(self.rows)} images, the same ones every time)"

    def run(self, stages: list[str] = STAGES) -> None:
        """The chosen stages in turn; one that fails is logged and noted, and the others still run."""
        for measure in (getattr(self, f"measure_{stage}") for stage in STAGES if stage in stages):
            try:
                measure()
            except Exception as error:  # a long benchmark must not lose every figure to one broken stage
                log(traceback.format_exc())
                self.failures[measure.__name__] = f"{type(error).__name__}: {error}"

    def json_figures(self) -> dict[str, float | None]:
        """Every figure by its JSON name; None for one whose stage failed."""
        return {self.name(figure): self.figures.get(self.name(figure)) for figure in FIGURES}


def write_backbones_json(output: Path, mode: str, per_backbone: dict, context: dict) -> None:
    """backbones.json beside results.md (the app's picker reads bench/backbones.json); subsets say so in the name."""
    if not per_backbone:
        return
    name = "backbones.json" if mode == "full" else f"backbones.{mode}.json"
    data = {
        "measured": context["date"],
        "conditions": f"{context['cores']} cores, load average "
        f"{context['load average (1/5/15 min)']}; {context['dataset']}",
        "backbones": per_backbone,
    }
    (output.parent / name).write_text(json.dumps(data, indent=2) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--quick", action="store_true", help="a fixed subset of flowers; under 5 minutes")
    which.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # for tests/test_bench.py only
    parser.add_argument("--output", type=Path, help=f"where results.md goes (default {DEFAULT_OUTPUT})")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder of caches and runs")
    parser.add_argument(
        "--stages",
        nargs="+",
        choices=STAGES,
        default=STAGES,
        help="run only these stages (needs --output: a partial run never writes bench/results.md)",
    )
    parser.add_argument(
        "--backbones",
        nargs="+",
        choices=backbones.LITES,
        default=list(backbones.LITES),
        help="the backbones the per-backbone stage compares",
    )
    args = parser.parse_args(argv)
    args.mode = MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.output is None and not args.smoke:
        args.output = DEFAULT_OUTPUT
    if args.smoke and args.output is not None and args.output.resolve() == DEFAULT_OUTPUT.resolve():
        parser.error("--smoke never writes bench/results.md; give --output elsewhere")
    if args.stages != STAGES and args.output is not None and args.output.resolve() == DEFAULT_OUTPUT.resolve():
        parser.error("a partial run (--stages) never writes bench/results.md; give --output elsewhere")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, load_before = time.monotonic(), load_average()
    workdir = Path(tempfile.mkdtemp(prefix=f"retrain-bench-{args.mode.name}-"))
    log(f"{args.mode.name} benchmark in {workdir}; load average {load_before}")
    try:
        bench = Benchmark(args.mode, workdir)
        bench.backbone_names = tuple(args.backbones)
        bench.run(args.stages)
        output = args.output or workdir / "results.md"
        context = {
            "mode": args.mode.name,
            **machine(),
            "command": f"`{shlex.join([sys.executable, *sys.argv])}`",
            "runtime": f"{time.monotonic() - started:.0f} s",
            "load average (1/5/15 min)": f"{load_before} at start, {load_average()} at end",
            "load average (1 min) as each stage began": ", ".join(f"{load:.1f}" for load in bench.loads),
            "dataset": f"{bench.describe_dataset()}",
            "stages": "all" if args.stages == STAGES else ", ".join(args.stages),
        }
        write_markdown(
            output, bench.json_figures(), bench.how, bench.extras, context, bench.failures, bench.per_backbone
        )
        write_backbones_json(output, args.mode.name, bench.per_backbone, context)
        log(f"wrote {output} in {time.monotonic() - started:.0f} s")
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(bench.json_figures()), flush=True)
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
