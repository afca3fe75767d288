"""Average the weights of several epochs of one run (stochastic weight averaging) into a weights file.

The epochs at the end of a cosine schedule sit around one minimum; their average often lies
nearer its centre than any one of them (Izmailov et al., "Averaging Weights Leads to Wider
Optima and Better Generalization", 2018). Batch-norm statistics of an average are not the
average of the statistics, so they are measured again, in training mode without gradients,
on augmented crops of the training images drawn as in training::

    python -m training.average_checkpoints runs/unet --epochs 15-30 --out runs/unet/swa.safetensors

``--epochs`` names copies of ``<run>/checkpoint.pt`` saved after each epoch as ``<run>/ep<N>.pt``.
The file gets the run's metadata (threshold 0.5 until evaluate.py calibrates it) and records
which epochs it averages.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.data import DataLoader, WeightedRandomSampler


from napari_nucleiseg.models import build_model
from napari_nucleiseg.weights import read_metadata, save_weights
from training.data import CropDataset, balanced_weights, image_kind, list_ids, load_pair
from training.train import BALANCED_SHARES


def parse_epochs(text: str) -> list[int]:
    """``"15-18,20"`` -> ``[15, 16, 17, 18, 20]``."""
    epochs = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        epochs.extend(range(int(first), int(last or first) + 1))
    if not epochs or min(epochs) < 1:
        raise argparse.ArgumentTypeError(f"epochs must be positive numbers or ranges like 15-30, not {text!r}")
    return sorted(set(epochs))


def average_states(states: list[dict]) -> dict:
    """The element-wise mean of floating-point tensors; integer buffers (batch counts) from the last state."""
    averaged = {}
    for key, last in states[-1].items():
        if last.is_floating_point():
            averaged[key] = torch.stack([s[key].double() for s in states]).mean(0).to(last.dtype)
        else:
            averaged[key] = last.clone()
    return averaged


@torch.no_grad()
def update_batch_norm(network: torch.nn.Module, loader, max_batches: int | None = None) -> int:
    """Re-measure every batch-norm layer's running mean and variance on ``loader`` (cumulative average)."""
    layers = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = {layer: layer.momentum for layer in layers}
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    network.train()
    batches = 0
    for images, _ in loader:
        if max_batches is not None and batches >= max_batches:
            break
        network(images)
        batches += 1
    for layer, momentum in momenta.items():
        layer.momentum = momentum
    network.eval()
    return batches


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the --out folder of train.py, with ep<N>.pt copies")
    parser.add_argument("--epochs", type=parse_epochs, required=True, help="e.g. 15-30 or 20,25,30")
    parser.add_argument("--out", type=Path, required=True, help="weights file to write")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018"))
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--crop-size", type=int, default=None, help="default: the run's")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the run's")
    parser.add_argument("--passes", type=int, default=1, help="passes over the training images for batch norm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="use only this many training images (smoke tests)")
    args = parser.parse_args(argv)

    paths = [args.run / f"ep{epoch}.pt" for epoch in args.epochs]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"{args.run} has no {', '.join(missing)}: copy checkpoint.pt after each epoch to average them")
    metadata = read_metadata(args.run / "best.safetensors")
    for key in ("format", "format_version", "package_version"):
        metadata.pop(key, None)
    states, last_state = [], None
    for path in paths:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        states.append(checkpoint["model"])
        last_state = checkpoint["state"]
    network = build_model(metadata["architecture"], **metadata["kwargs"])
    network.load_state_dict(average_states(states))

    training = metadata["training"]
    crop_size = args.crop_size or training.get("crop_size", 192)
    batch_size = args.batch_size or training.get("batch_size", 8)
    torch.manual_seed(args.seed)
    pairs = [load_pair(args.data, i) for i in list_ids(args.data, args.train_split or None)[: args.limit]]
    dataset = CropDataset(pairs, crop_size, args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    sampler = None
    if training.get("sampling") == "balanced":
        kinds = [image_kind(image) for image, _ in pairs]
        sampler = WeightedRandomSampler(balanced_weights(kinds, BALANCED_SHARES), len(pairs) * args.passes,
                                        generator=generator)
    elif args.passes > 1:
        dataset.pairs = pairs * args.passes
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                        generator=generator, drop_last=True)
    batches = update_batch_norm(network, loader)
    print(f"averaged {len(states)} epochs ({args.epochs[0]}-{args.epochs[-1]}); "
          f"batch norm measured on {batches} batches of {batch_size} crops", flush=True)

    metadata["training"] = dict(training, epochs=last_state["epoch"], minutes=round(last_state["elapsed"] / 60, 1),
                                averaged_epochs=args.epochs)
    metadata["metrics"] = {}
    return save_weights(args.out, network, metadata)


if __name__ == "__main__":
    print(main())
