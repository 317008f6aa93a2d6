"""`pip install .` into a fresh venv gives the `retrain-studio` command, offline and fast.

The fresh venv reaches the test venv's packages (TensorFlow, ...) through a .pth file and is
built with --no-deps --no-build-isolation, so nothing is downloaded; what is tested is our
packaging: which packages go in, the console script, and that the installed engine runs.
"""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_pip_install_into_a_fresh_venv_then_the_console_script(tmp_path):
    source = tmp_path / "source"  # pip builds in place; a copy keeps build/ and egg-info out of the repo
    shutil.copytree(REPO / "pipeline", source / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for extra in ("pages", "bench", "tests"):  # present in the tree, never packaged
        shutil.copytree(REPO / extra, source / extra, ignore=shutil.ignore_patterns("__pycache__"))
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True, timeout=120)
    fresh_python = fresh / "bin" / "python"
    site = subprocess.run(
        [fresh_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "test-venv-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(fresh_python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    installed = sorted(path.name for path in Path(site).iterdir())
    assert "pipeline" in installed and not {"pages", "bench", "tests"} & set(installed)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [fresh / "bin" / "retrain-studio", "train", "--help"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage: retrain-studio train") and "--how_many_training_steps" in result.stdout
    where = subprocess.run(
        [fresh_python, "-c", "import pipeline; print(pipeline.__file__)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(site)
    bad = subprocess.run(
        [fresh / "bin" / "retrain-studio", "predict", "--model", str(elsewhere / "none"), str(elsewhere / "x.jpg")],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
