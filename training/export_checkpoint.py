"""Write the model of a training checkpoint (``<out>/checkpoint.pt``, the LAST epoch) as a weights file.

train.py keeps the epoch with the best validation score at fixed settings (threshold 0.5) in
``best.safetensors``; after calibration a later epoch can be better. This exports the last
epoch with the same metadata, so evaluate.py can compare both::

    python -m training.export_checkpoint runs/unet --out runs/unet/last.safetensors

``--checkpoint`` exports a copy of ``checkpoint.pt`` saved after an earlier epoch instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from napari_nucleiseg.models import build_model
from napari_nucleiseg.weights import read_metadata, save_weights


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the --out folder of train.py")
    parser.add_argument("--out", type=Path, required=True, help="weights file to write")
    parser.add_argument("--checkpoint", type=Path, help="a copy of <run>/checkpoint.pt from an earlier epoch")
    args = parser.parse_args(argv)
    checkpoint = torch.load(args.checkpoint or args.run / "checkpoint.pt", map_location="cpu", weights_only=False)
    metadata = read_metadata(args.run / "best.safetensors")
    for key in ("format", "format_version", "package_version"):
        metadata.pop(key, None)
    state = checkpoint["state"]
    network = build_model(metadata["architecture"], **metadata["kwargs"])
    network.load_state_dict(checkpoint["model"])
    metadata["training"] = dict(metadata["training"], epochs=state["epoch"], minutes=round(state["elapsed"] / 60, 1))
    last = state["history"][-1]
    metadata["metrics"] = {"val_during_training": {k: round(v, 4) for k, v in last.items() if k not in ("epoch", "loss")}}
    return save_weights(args.out, network, metadata)


if __name__ == "__main__":
    print(main())
