"""Screens on a cluster (issue 16, part 3), through the real command line: ``--workers 2`` (a LocalCluster of
two worker processes), ``--scheduler`` (a running cluster), ``--resume`` after a real SIGKILL, a changed
setting or input redone, a failed image skipped, a killed worker's image retried."""

from __future__ import annotations

import json
import os
import shutil
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
from test_batch_stops import check_consistent, wait_for_labels
from napari_nucleiseg.cli import EXIT_PARTIAL, main

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
distributed = pytest.importorskip("distributed", reason="needs the [cluster] extra: pip install -e '.[cluster]'")
psutil = pytest.importorskip("psutil")  # a dependency of distributed


def write_images(folder: Path, count: int, tile: int = 1) -> Path:
    """``count`` gray PNGs of a few blobs (``tile`` x ``tile`` copies: larger, slower), and one Z stack."""
    folder.mkdir()
    for index in range(count):
        centers = [(40 + 30 * (index % 3), 40 + 25 * k) for k in range(1 + index % 5)]
        image = blob_image((192, 192), centers=centers, radius=9, seed=index)
        iio.imwrite(folder / f"image{index:02d}.png", np.tile(image, (tile, tile)))
    stack = np.stack([blob_image((192, 192), seed=plane) for plane in range(3)])
    tifffile.imwrite(folder / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    return folder


def run(capsys, *args) -> tuple[int, str, str]:
    status = main(["segment", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "napari_nucleiseg.cli", "segment", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))


def outputs(out: Path) -> dict[str, object]:
    """What a user reads of a run: the tables' text and every label image's pixels."""
    found: dict[str, object] = {name: (out / name).read_text() for name in ("counts.csv", "nuclei.csv")}
    found.update({path.name: tifffile.imread(path) for path in sorted(out.glob("*_labels.tif"))})
    return found


def assert_same_outputs(found: dict, expected: dict) -> None:
    assert found.keys() == expected.keys()
    for name, value in expected.items():
        assert np.array_equal(found[name], value) if isinstance(value, np.ndarray) else found[name] == value, name


def label_files(out: Path) -> dict[str, tuple[int, int]]:
    """Each label file's inode and modification time: a file written again (renamed into place) changes both."""
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in out.glob("*_labels.tif")}


def worker_processes(client_pid: int) -> list:
    """The LocalCluster's worker processes: the children multiprocessing spawned under the run's process."""
    children = psutil.Process(client_pid).children(recursive=True)
    return [child for child in children if "spawn_main" in " ".join(child.cmdline())]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_weights) -> tuple[Path, dict]:
    """12 images and a stack, and what one uninterrupted in-process run makes of them."""
    folder = write_images(tmp_path_factory.mktemp("screen") / "images", 12)
    out = folder.parent / "reference"
    assert main(["segment", str(folder), "--out", str(out), "--weights", str(tiny_weights["unet"])]) == 0
    return folder, outputs(out)


def test_two_worker_processes_give_the_results_of_one_process_and_skip_a_bad_image(
        reference, tmp_path, tiny_weights, capsys, monkeypatch):
    import napari_nucleiseg._cluster as cluster

    folder, expected = reference
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    workers = []
    as_finished = cluster._as_finished

    def noting_the_workers(client, futures, stops):
        workers.extend(client.run(os.getpid).values())
        return as_finished(client, futures, stops)

    monkeypatch.setattr(cluster, "_as_finished", noting_the_workers)
    status, stdout, stderr = run(capsys, folder, bad, "--out", tmp_path / "out", "--weights", tiny_weights["unet"],
                                 "--workers", 2)
    assert status == EXIT_PARTIAL and "Segmented 13 of 14 images" in stdout
    assert len(set(workers)) == 2 and os.getpid() not in workers  # two processes of their own
    # the bad image is one line, and the cluster says nothing of its own
    assert stderr.strip().splitlines() == [f"nucleiseg: skipped {bad}: not a readable image (damaged file or "
                                           "unknown format)"]
    assert_same_outputs(outputs(tmp_path / "out"), expected)  # in the run's order, whatever order they finished in


def test_a_run_killed_at_half_and_resumed_gives_the_outputs_of_an_uninterrupted_run(reference, tmp_path, tiny_weights):
    folder, expected = reference
    out = tmp_path / "out"
    command = (folder, "--out", out, "--weights", tiny_weights["unet"], "--resume")
    killed = start(*command, "--workers", 2)
    records = out / ".nucleiseg" / "done"
    wait_for_labels(out, 1, killed)
    workers = worker_processes(killed.pid)
    while len(list(records.glob("*.json"))) < 6:  # of 13
        assert killed.poll() is None, killed.communicate()
        time.sleep(0.01)
    killed.kill()  # SIGKILL: nothing of the run's own runs after it
    killed.wait(timeout=60)
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, "the workers outlived the run"
    recorded = {path.stem for path in records.glob("*.json")}
    assert 6 <= len(recorded) < 13
    finished = {name: identity for name, identity in label_files(out).items() if Path(name).stem in recorded}

    resumed = start(*command)  # in this process this time: the records are the same
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0 and stderr == "", stderr
    assert f"Segmented {13 - len(recorded)} of the {13 - len(recorded)} images left ({len(recorded)} of 13" in stdout
    assert {name: label_files(out)[name] for name in finished} == finished  # nothing finished was written again
    assert_same_outputs(outputs(out), expected)
    assert not list(out.glob("replaced-*")) and not list(out.rglob(".*.partial"))


def test_a_changed_input_file_or_setting_is_redone_and_nothing_else(tmp_path, tiny_weights, capsys):
    folder = write_images(tmp_path / "images", 4)
    out = tmp_path / "out"
    command = (folder, "--out", out, "--weights", tiny_weights["unet"], "--resume")
    assert run(capsys, *command)[0] == 0
    before = label_files(out)

    iio.imwrite(folder / "image01.png", blob_image((192, 192), centers=((60, 60),), seed=99))  # changed
    os.utime(folder / "image02.png")  # touched: the same bytes, a new modification time
    status, stdout, stderr = run(capsys, *command)
    assert status == 0 and "Segmented 1 of the 1 images left (4 of 5 were done before)" in stdout
    after = label_files(out)
    (aside,) = out.glob("replaced-*")  # the earlier labels of the image redone: kept (it may be hand-corrected)
    assert sorted(path.name for path in aside.iterdir()) == ["image01_labels.tif"]
    kept = aside / "image01_labels.tif"
    assert (kept.stat().st_ino, kept.stat().st_mtime_ns) == before["image01_labels.tif"]  # the very file, moved
    assert f"kept in {aside}" in stderr
    shutil.rmtree(aside)
    assert after["image01_labels.tif"] != before["image01_labels.tif"]
    assert {name: after[name] for name in before if name != "image01_labels.tif"} == \
        {name: before[name] for name in before if name != "image01_labels.tif"}
    counts = pd.read_csv(out / "counts.csv").set_index("labels_file")  # the new image's row
    assert counts.loc["image01_labels.tif", "nuclei"] == len(np.unique(tifffile.imread(out / "image01_labels.tif"))) - 1

    status, stdout, _ = run(capsys, *command, "--threshold", 0.6)  # a setting: every image again
    assert status == 0 and "Segmented 5 of 5 images" in stdout
    assert (pd.read_csv(out / "counts.csv")["threshold"] == 0.6).all()
    assert not set(label_files(out).items()) & set(after.items())
    status, stdout, _ = run(capsys, *command, "--threshold", 0.6)
    assert status == 0 and stdout.startswith("Nothing left to segment: all 5 images were done before")


def test_files_a_stopped_run_wrote_but_did_not_record_are_replaced_not_kept_aside(tmp_path, tiny_weights, capsys):
    """A run killed between writing an image's labels and recording them (as the test above can be):
    resumed, it set those labels aside as if they were the user's, and said so."""
    from napari_nucleiseg._manifest import Manifest

    folder = write_images(tmp_path / "images", 3)
    out = tmp_path / "out"
    command = (folder, "--out", out, "--weights", tiny_weights["unet"], "--resume")
    assert run(capsys, *command)[0] == 0
    records = out / ".nucleiseg" / "done"
    stopped = json.loads((records / "image01_labels.json").read_text())
    manifest = Manifest(out, stopped["settings"])
    for name in ("image01", "image02"):  # the stopped run's notes, written just before its labels went in place
        manifest.note_written(out / f"{name}_labels.tif", out / f"{name}_labels.tif")
        (records / f"{name}_labels.json").unlink()  # and it was killed before their records
    corrected = tifffile.imread(out / "image02_labels.tif")
    corrected[:5, :5] = 99
    tifffile.imwrite(out / "image02_labels.tif", corrected)  # then the user corrected one of them
    status, stdout, stderr = run(capsys, *command)
    assert status == 0 and "Segmented 2 of the 2 images left" in stdout
    (aside,) = out.glob("replaced-*")  # the run's own labels replaced; the corrected ones kept aside
    assert sorted(path.name for path in aside.iterdir()) == ["image02_labels.tif"] and "kept in" in stderr
    assert tifffile.imread(aside / "image02_labels.tif")[0, 0] == 99
    assert not list((out / ".nucleiseg" / "writing").iterdir())


@pytest.fixture(scope="module")
def large_images(tmp_path_factory) -> Path:
    """6 images of 960 x 960 (about half a second each) and a stack: a run lasts a few seconds."""
    return write_images(tmp_path_factory.mktemp("large") / "images", 6, tile=5)


def test_a_killed_worker_is_replaced_and_its_image_segmented_again(large_images, tmp_path, tiny_weights):
    out = tmp_path / "out"
    process = start(large_images, "--out", out, "--weights", tiny_weights["unet"], "--workers", 2)
    wait_for_labels(out, 1, process)
    workers = worker_processes(process.pid)
    assert len(workers) == 2
    workers[0].kill()  # mid-image: each worker always has one
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0 and stderr == "", stderr
    assert "Segmented 7 of 7 images" in stdout
    assert len(pd.read_csv(out / "counts.csv")) == 7 and len(list(out.glob("*_labels.tif"))) == 7


def test_a_cluster_run_stopped_by_sigterm_keeps_the_tables_of_every_image_it_finished(large_images, tmp_path,
                                                                                      tiny_weights):
    out = tmp_path / "out"
    process = start(large_images, "--out", out, "--weights", tiny_weights["unet"], "--workers", 2)
    wait_for_labels(out, 1, process)
    workers = worker_processes(process.pid)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith("nucleiseg: interrupted by SIGTERM; counts.csv and nuclei.csv hold the")
    assert 1 <= len(check_consistent(out)) < 7  # every row describes the label file beside it, and back
    assert not (out / ".nucleiseg.lock").exists()
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, "the workers outlived the run"


def test_a_run_on_a_running_cluster_and_a_scheduler_that_does_not_answer(reference, tmp_path, tiny_weights, capsys):
    import dask

    folder, expected = reference
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as running:
        status, stdout, stderr = run(capsys, folder, "--out", tmp_path / "out", "--weights", tiny_weights["unet"],
                                     "--scheduler", running.scheduler_address)
        assert status == 0 and stderr == "" and "Segmented 13 of 13 images" in stdout
        assert not [name for name in running.scheduler.worker_plugins if name.startswith("nucleiseg")]  # removed
    assert_same_outputs(outputs(tmp_path / "out"), expected)

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        status, _, stderr = run(capsys, folder, "--out", tmp_path / "other", "--weights", tiny_weights["unet"],
                                "--scheduler", "tcp://127.0.0.1:9")
    assert status == 1
    (line,) = stderr.strip().splitlines()
    assert line.startswith("nucleiseg: cannot reach the dask scheduler at tcp://127.0.0.1:9")


def test_without_distributed_one_sentence_says_how_to_install_it(tmp_path, tiny_weights, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    iio.imwrite(tmp_path / "image.png", blob_image())
    for option in (("--workers", 2), ("--scheduler", "tcp://127.0.0.1:8786")):
        status, _, stderr = run(capsys, tmp_path / "image.png", "--out", tmp_path / "out", *option)
        assert status == 1
        assert stderr.strip() == ("nucleiseg: --workers and --scheduler run on dask's distributed scheduler, which is "
                                  "not installed: pip install 'napari-nucleiseg[cluster]'.")
    assert not (tmp_path / "out").exists()


def test_a_run_without_the_cluster_options_imports_no_dask(tmp_path, tiny_weights):
    iio.imwrite(tmp_path / "image.png", blob_image())
    code = ("import sys; from napari_nucleiseg.cli import main\n"
            f"assert main(['segment', {str(tmp_path / 'image.png')!r}, '--out', {str(tmp_path / 'out')!r}, "
            f"'--weights', {str(tiny_weights['unet'])!r}, '--resume']) == 0\n"
            "print(sorted(name for name in sys.modules if name.split('.')[0] in ('dask', 'distributed')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
