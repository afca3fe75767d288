"""The bundled sample images: small, of the three kinds promised, and cheap to open."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

import numpy as np
import pytest

from napari_nucleiseg._sample_data import SAMPLES, brightfield_sample, fluorescence_sample, tissue_sample

MAX_SAMPLE_BYTES = 300_000


def test_samples_are_small_files_in_the_package():
    folder = resources.files("napari_nucleiseg") / "samples"
    assert (folder / "README.md").is_file()
    for filename, _ in SAMPLES.values():
        size = len((folder / filename).read_bytes())
        assert 0 < size <= MAX_SAMPLE_BYTES, filename


def test_gray_samples_are_2d_and_the_tissue_is_rgb():
    (fluo, fluo_meta, kind), = fluorescence_sample()
    (tissue, tissue_meta, _), = tissue_sample()
    (bright, bright_meta, _), = brightfield_sample()
    assert kind == "image"
    assert fluo.ndim == 2 and fluo.dtype == np.uint8 and not fluo_meta["rgb"]
    assert bright.ndim == 2 and bright.dtype == np.uint8 and not bright_meta["rgb"]
    assert tissue.shape[2] == 3 and tissue.dtype == np.uint8 and tissue_meta["rgb"]
    # The kinds differ the way a user sees them: fluorescence is dark, brightfield is light,
    # and the tissue is stained (blue over green, i.e. purple).
    assert fluo.mean() < 80 < 150 < bright.mean()
    assert tissue[..., 2].mean() > tissue[..., 1].mean() + 30


def test_opening_a_sample_and_validating_the_manifest_do_not_import_torch():
    code = (
        "import sys\n"
        "from npe2 import PluginManifest\n"
        "manifest = PluginManifest.from_distribution('napari-nucleiseg')\n"
        "manifest.validate_imports()\n"
        "from napari_nucleiseg._sample_data import tissue_sample\n"
        "tissue_sample()\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_the_manifest_offers_the_three_samples_and_the_widget_under_layers_segment():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-nucleiseg")
    assert {sample.key for sample in manifest.contributions.sample_data} == set(SAMPLES)
    (widget,) = manifest.contributions.widgets
    assert widget.display_name == "Nuclei segmentation"
    segment_menu = manifest.contributions.menus["napari/layers/segment"]
    assert [item.command for item in segment_menu] == [widget.command]


@pytest.mark.gui
def test_a_sample_opens_in_the_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-nucleiseg", "tissue")
    (layer,) = viewer.layers
    assert layer.rgb and layer.data.shape == (256, 320, 3)
