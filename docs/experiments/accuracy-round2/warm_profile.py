"""Profile a warm rerun on flowers: where do the seconds go before model.keras + report are there."""
import os, sys, time, cProfile, pstats, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"; os.environ.setdefault("RETRAIN_STUDIO_MAX_JOBS", "64")
t0 = time.monotonic()
from pipeline.config import RunConfig, DatasetConfig, TrainConfig, OutputConfig
from pipeline.retrain import retrain
t1 = time.monotonic()
cfg = RunConfig(dataset=DatasetConfig(image_dir="/work/shared/datasets/flowers"),
                train=TrainConfig(learning_rate=float(sys.argv[2]), dropout=0.3),
                output=OutputConfig(bottleneck_dir="/tmp/acc2-bn-lite0", export_formats=sys.argv[3].split(",")))
prof = cProfile.Profile(); prof.enable()
rep = retrain(cfg, sys.argv[1])
prof.disable()
print("import", round(t1 - t0, 2), "retrain", round(time.monotonic() - t1, 2), json.dumps(rep.extra["timings"]), rep.test_accuracy, rep.extra["cache"]["originals"])
pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
