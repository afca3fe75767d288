"""A batch run stopped from outside never loses or mixes results: real ``nucleiseg`` processes sent
real signals (SIGINT, SIGTERM, SIGHUP, SIGKILL), a rerun with --overwrite stopped half-way, and two
runs into one folder at once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import tifffile

from conftest import blob_image

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

N_IMAGES = 40


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    images = tmp_path_factory.mktemp("batch")
    for index in range(N_IMAGES):
        centers = [(40 + 30 * (index % 3), 40 + 25 * k) for k in range(1 + index % 5)]
        iio.imwrite(images / f"image{index:02d}.png", blob_image((192, 192), centers=centers, radius=9, seed=index))
    return images


@pytest.fixture(scope="module")
def slow_folder(tmp_path_factory) -> Path:
    """Images large enough that a run lasts longer than a second one takes to start."""
    images = tmp_path_factory.mktemp("slow_batch")
    for index in range(24):
        iio.imwrite(images / f"large{index:02d}.png", np.tile(blob_image((192, 192), seed=index), (5, 5)))
    return images


def start(folder: Path, out: Path, weights: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "napari_nucleiseg.cli", "segment", str(folder), "--out", str(out),
                             "--weights", str(weights), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def wait_for_labels(out: Path, count: int, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while len(list(out.glob("*_labels.tif"))) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run wrote no labels in time"
        time.sleep(0.02)


def check_consistent(out: Path, *, every_file_has_a_row: bool = True) -> pd.DataFrame:
    """Every file under its final name is complete, and every row of the tables describes the label
    file beside it; returns counts.csv (empty when the run wrote none)."""
    labels = {path.name: tifffile.imread(path) for path in out.glob("*_labels.tif")}  # each one reads whole
    counts_path = out / "counts.csv"
    counts = pd.read_csv(counts_path) if counts_path.exists() else pd.DataFrame(columns=["labels_file", "nuclei", "file"])
    for row in counts.itertuples():
        assert row.labels_file in labels, f"a row for {row.labels_file}, which is not there"
        assert len(np.unique(labels[row.labels_file])) - 1 == row.nuclei
    nuclei_path = out / "nuclei.csv"
    assert nuclei_path.exists() or not counts_path.exists(), "counts.csv without nuclei.csv"
    if nuclei_path.exists():
        nuclei = pd.read_csv(nuclei_path)
        per_file = nuclei.groupby("file").size()
        for row in counts.itertuples():
            assert per_file.get(row.file, 0) == row.nuclei
        # nuclei.csv is written first: a kill between the two renames leaves it at most a few images
        # ahead of counts.csv, never with nuclei of an image whose label file is not in place
        labelled = {name.removesuffix("_labels.tif") for name in labels}
        assert {Path(name).stem for name in per_file.index} <= labelled
        if every_file_has_a_row:
            assert set(per_file.index) <= set(counts["file"])
    if every_file_has_a_row:
        assert set(labels) == set(counts["labels_file"]), "label files without their rows"
        assert not list(out.glob(".*.partial"))
    return counts


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_run_stopped_by_a_signal_keeps_the_tables_of_every_image_it_finished(folder, tmp_path, tiny_weights, signum):
    out = tmp_path / "out"
    process = start(folder, out, tiny_weights["unet"])
    wait_for_labels(out, 3, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    line = stderr.strip()
    assert line.startswith("nucleiseg: interrupted") and "counts.csv and nuclei.csv hold the" in line
    assert line.endswith("To segment the rest, run the same command with --resume.")
    counts = check_consistent(out)
    assert 3 <= len(counts) < N_IMAGES
    assert not (out / ".nucleiseg.lock").exists()
    if signum == signal.SIGINT:  # ... and it does: the images finished are kept (a plain run records them too)
        resumed = start(folder, out, tiny_weights["unet"], "--resume")
        stdout, stderr = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, stderr
        assert f"images left ({len(counts)} of {N_IMAGES} were done before)" in stdout


def test_a_rerun_with_overwrite_stopped_half_way_never_mixes_two_runs(folder, tmp_path, tiny_weights):
    out = tmp_path / "out"
    first = start(folder, out, tiny_weights["unet"], "--threshold", "0.5")
    assert first.wait(timeout=300) == 0
    assert len(pd.read_csv(out / "counts.csv")) == N_IMAGES

    second = start(folder, out, tiny_weights["unet"], "--threshold", "0.9", "--overwrite")
    deadline = time.monotonic() + 120
    # the first run's files are moved aside, one rename each, as the rerun starts: until the last is
    # moved, label files of the first run are still in ``out``
    while len(list(out.glob("replaced-*/*_labels.tif"))) < N_IMAGES:
        assert second.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    wait_for_labels(out, 3, second)
    second.send_signal(signal.SIGTERM)
    _, stderr = second.communicate(timeout=120)
    assert second.returncode == 128 + signal.SIGTERM
    counts = check_consistent(out)
    assert (counts["threshold"] == 0.9).all() and 3 <= len(counts) < N_IMAGES
    (aside,) = out.glob("replaced-*")  # the first run's files, whole, in a folder of their own
    assert "replaced-" in stderr and len(pd.read_csv(aside / "counts.csv")) == N_IMAGES
    assert "--resume" not in stderr  # which --overwrite beside it refuses (review)
    assert len(list(aside.glob("*_labels.tif"))) == N_IMAGES

    third = start(folder, out, tiny_weights["unet"], "--threshold", "0.9", "--overwrite")
    assert third.wait(timeout=300) == 0
    assert len(check_consistent(out)) == N_IMAGES
    assert list(out.glob("replaced-*")) == [aside]  # a complete rerun keeps none of its own: it replaced them


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_runs(slow_folder, tmp_path, tiny_weights):
    out = tmp_path / "out"
    first = start(slow_folder, out, tiny_weights["unet"])
    wait_for_labels(out, 1, first)
    second = start(slow_folder, out, tiny_weights["hrnet"], "--overwrite")  # it would move the first run's files aside
    _, stderr = second.communicate(timeout=120)
    assert second.returncode == 1
    assert stderr.strip() == (f"nucleiseg: another nucleiseg run (process {first.pid}) is writing to {out}; "
                              "wait for it to end, or choose another --out folder (if no run is writing there, "
                              f"delete {out / '.nucleiseg.lock'}).")
    assert first.wait(timeout=300) == 0
    assert (check_consistent(out)["model"] == "tiny-unet").all()  # nothing of the second run's


def test_a_lock_left_by_a_killed_run_whose_process_id_is_taken_since_is_taken_over(capsys, folder, tmp_path,
                                                                                   tiny_weights):
    """QA: after a reboot the id in the lock of a run killed outright was another live process's (here, this one,
    started at another time), and every run into the folder was refused for good."""
    from napari_nucleiseg._batch import _start_time
    from napari_nucleiseg.cli import main

    if _start_time(os.getpid()) is None:
        pytest.skip("no process start times here (/proc)")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".nucleiseg.lock").write_text(f"{os.getpid()} 1\n")  # this process's id, another start
    assert main(["segment", str(folder / "image00.png"), "--out", str(out), "--weights", str(tiny_weights["unet"])]) == 0
    assert not (out / ".nucleiseg.lock").exists()
    (out / ".nucleiseg.lock").write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")  # a run of this process's
    assert main(["segment", str(folder / "image00.png"), "--out", str(out), "--weights", str(tiny_weights["unet"]),
                 "--overwrite"]) == 1
    assert "another nucleiseg run" in capsys.readouterr().err


def test_a_lock_another_run_is_still_making_is_not_taken_over_but_an_old_empty_one_is(capsys, folder, tmp_path,
                                                                                        tiny_weights):
    """QA: a run that found the lock of a run starting that instant, made but not yet written, took it for a dead
    run's lock, deleted it, and both wrote into the folder."""
    from napari_nucleiseg.cli import main

    out = tmp_path / "out"
    out.mkdir()
    lock = out / ".nucleiseg.lock"
    lock.write_text("")  # made this instant, its process id not yet in it
    command = ["segment", str(folder / "image00.png"), "--out", str(out), "--weights", str(tiny_weights["unet"])]
    assert main(command) == 1
    assert "another nucleiseg run is starting to write to" in capsys.readouterr().err
    assert lock.exists() and not list(out.glob("*_labels.tif"))
    os.utime(lock, (time.time() - 60, time.time() - 60))  # a minute old and still empty: a dead run's
    assert main(command) == 0
    assert not lock.exists() and len(list(out.glob("*_labels.tif"))) == 1


def test_a_folder_whose_writes_land_after_it_is_deleted_is_deleted_again(tmp_path):
    """QA: a block-by-block run that failed on a full disk left a store: zarr's chunk writes, in threads of its
    own, landed after the store was deleted."""
    import threading

    from napari_nucleiseg._batch import remove_tree

    store = tmp_path / "slide_labels.ome.zarr"
    (store / "0" / "0").mkdir(parents=True)

    def late_chunk():
        time.sleep(0.02)
        (store / "0" / "1").mkdir(parents=True, exist_ok=True)
        (store / "0" / "1" / "0").write_bytes(b"chunk")

    writer = threading.Thread(target=late_chunk)
    writer.start()
    remove_tree(store)
    writer.join()
    assert not store.exists()


def test_a_run_killed_outright_at_random_moments_leaves_only_whole_files(folder, tmp_path, tiny_weights):
    rng = random.Random(0)
    for attempt in range(3):
        out = tmp_path / f"out{attempt}"
        process = start(folder, out, tiny_weights["unet"])
        wait_for_labels(out, 1, process)
        time.sleep(rng.uniform(0.0, 1.5))
        process.kill()  # SIGKILL: nothing runs after it
        process.wait(timeout=60)
        check_consistent(out, every_file_has_a_row=False)  # the tables may lack the last images
        # the next run into the folder takes over its lock and clears its temporary files
        rerun = start(folder, out, tiny_weights["unet"], "--overwrite")
        assert rerun.wait(timeout=300) == 0, rerun.communicate()
        assert len(check_consistent(out)) == N_IMAGES
