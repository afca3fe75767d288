"""Train a nucleus segmentation model on DSB2018 and write a napari-nucleiseg weights file.

Example (the command behind the bundled UNet; see weights/README.md)::

    python -m training.train --model unet --data ../shared/data/dsb2018 --out runs/unet \
        --epochs 40 --time-budget 25

Each epoch trains on one random augmented crop of every ``train`` image, then scores
the model on ``val`` (DSB2018 instance score at threshold 0.5). The best epoch is written
to ``<out>/best.safetensors``; ``<out>/checkpoint.pt`` holds everything needed to
``--resume``. Training stops at ``--epochs``, after ``--patience`` epochs without
improvement, or when ``--time-budget`` minutes have passed.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import platform
import random
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from napari_nucleiseg.inference import predict_normalized
from napari_nucleiseg.learn.augment import coarsened
from napari_nucleiseg.learn.loop import train_steps
from napari_nucleiseg.models import build_model
from napari_nucleiseg.postprocess import labels_from_probabilities
from napari_nucleiseg.preprocess import DEFAULT_LOG_GAIN, DEFAULT_PERCENTILES, normalize_image
from napari_nucleiseg.scale import rescale_image, rescale_labels, rescaled_shape
from napari_nucleiseg.weights import load_weights, save_weights
from training.data import (
    CropDataset,
    balanced_weights,
    holdout_split,
    image_kind,
    list_ids,
    load_pair,
    median_diameter,
    worker_init,
)
from training.metrics import instance_scores, pixel_confusion, pixel_scores

#: Architecture arguments train.py builds: 0.5-0.8 M parameters, a few minutes per epoch on
#: 2 CPU cores at 192-pixel crops. The bundled UNet was trained so for four runs, then grown to
#: ``--depth 4`` (1.9 M parameters) for a fifth (weights/README.md).
MODEL_KWARGS = {
    "unet": {"base_channels": 16, "depth": 3},
    "unetpp": {"base_channels": 16, "depth": 3},
    "hrnet": {"stem_channels": 16, "widths": [24, 48, 96], "blocks": 2},
}


#: Shares of the crops per image kind with ``--sampling balanced``. DSB2018's train split is
#: 82% fluorescence, 16% tissue and 2% brightfield images; the rare kinds score worst.
BALANCED_SHARES = {"fluorescence": 0.6, "tissue": 0.25, "brightfield": 0.15}

#: The same with H&E tissue sets added (``--extra-data monuseg=... consep=...``): DSB2018's
#: kinds keep most of the crops, each added set gets its own share.
BALANCED_SHARES_WITH_TISSUE = {"fluorescence": 0.45, "tissue": 0.1, "brightfield": 0.1, "monuseg": 0.2, "consep": 0.15}

#: What the weights inherit from each training set's licence (the data sets' READMEs in ../shared/data).
DATA_LICENCES = {
    "dsb2018": "DSB2018 stage1_train: CC0",
    "monuseg": "MoNuSeg 2018: CC BY-NC-SA 4.0 (non-commercial, share alike)",
    "consep": "CoNSeP: as published by its authors (Graham et al. 2019), cite the paper",
}
#: The note that weights trained on MoNuSeg carry (its non-commercial terms apply to them).
NON_COMMERCIAL_NOTE = ("trained on MoNuSeg 2018 (CC BY-NC-SA 4.0): these weights are for non-commercial use "
                       "only and are shared under the same terms")


def licence_note(sets: list[str]) -> str:
    """The weights file's ``licence``: the non-commercial note where MoNuSeg was used, then each set's terms."""
    terms = "; ".join(DATA_LICENCES.get(name, name) for name in dict.fromkeys(sets))
    return (NON_COMMERCIAL_NOTE + ". Data: " if "monuseg" in sets else "Data: ") + terms


#: Median nucleus diameter (pixels) of the frame the networks learn in (``--diameter``): the median
#: over DSB2018's train images of each image's median nucleus diameter (18.3 px), so most of
#: DSB2018 is rescaled little; MoNuSeg's (21.9) and CoNSeP's (16.2) are close too.
DEFAULT_DIAMETER = 18.0


#: The flips and transposition a teacher's prediction is averaged over (``--teacher-tta``):
#: (transpose, flip rows, flip columns). Each is its own inverse but for the order of steps.
TTA_TRANSFORMS = ((False, False, False), (False, True, False), (False, False, True), (True, False, False))


def teacher_maps(network: torch.nn.Module, images: list[np.ndarray], device, tta: bool,
                 log_gain: float = 0.0) -> list[np.ndarray]:
    """A teacher network's ``(H, W, 2)`` float16 probabilities for each ``(H, W, 3)`` uint8 image.

    Through the plugin's own normalisation and tiled inference; with ``tta``,
    averaged over :data:`TTA_TRANSFORMS` (a stronger teacher for 4x the time).
    """
    network = network.to(device).eval()
    maps = []
    for image in images:
        normalized = normalize_image(image, DEFAULT_PERCENTILES, log_gain)
        total = np.zeros((2,) + image.shape[:2], dtype=np.float32)
        for transpose, flip_rows, flip_columns in (TTA_TRANSFORMS if tta else TTA_TRANSFORMS[:1]):
            view = normalized.transpose(1, 0, 2) if transpose else normalized
            view = view[::-1] if flip_rows else view
            view = view[:, ::-1] if flip_columns else view
            predicted = predict_normalized(np.ascontiguousarray(view), network, device=device)
            predicted = predicted[:, :, ::-1] if flip_columns else predicted
            predicted = predicted[:, ::-1] if flip_rows else predicted
            total += predicted.transpose(0, 2, 1) if transpose else predicted
        maps.append((total / (len(TTA_TRANSFORMS) if tta else 1)).transpose(1, 2, 0).astype(np.float16))
    return maps


def framed_teacher_maps(teacher, images: list[np.ndarray], labels: list[np.ndarray],
                        tta: bool) -> list[np.ndarray]:
    """A teacher that records a nucleus diameter, run as the plugin runs it: each image brought to the
    teacher's frame with its true median nucleus diameter (the student's crops are rescaled with the same
    diameter), through the teacher's own normalisation, its probabilities brought back to the image's
    pixels; ``(H, W, 2)`` float16 each. An image without nuclei is run as it is.
    """
    from napari_nucleiseg.pipeline import predict_at_diameter

    maps = []
    for image, truth in zip(images, labels, strict=True):
        diameter = median_diameter(truth) or teacher.diameter
        probabilities = predict_at_diameter(image, teacher, diameter, augment=tta).probabilities
        maps.append(np.asarray(probabilities).transpose(1, 2, 0).astype(np.float16))
    return maps


def cached_teacher_maps(cache: Path, teacher_path: Path, ids: list[str], images: list[np.ndarray],
                        device, tta: bool, labels: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """The teacher's maps, kept in ``cache`` (an .npz) for a resumed or repeated run.

    A teacher that records a nucleus diameter is run in its frame (:func:`framed_teacher_maps`, given
    the true ``labels``); an older one on each image as it is (:func:`teacher_maps`). The cache holds
    the teacher file's SHA-256, the TTA flag, the image ids and the frame; it is used only when all
    match, otherwise computed and written anew.
    """
    digest = hashlib.sha256(Path(teacher_path).read_bytes()).hexdigest()
    teacher = load_weights(teacher_path)
    in_frame = teacher.diameter is not None and labels is not None
    key = json.dumps({"teacher": digest, "tta": tta, "ids": ids, **({"frame": "true diameter"} if in_frame else {})})
    if cache.is_file():
        with np.load(cache) as stored:
            if str(stored["key"]) == key:
                print(f"teacher maps read from {cache}", flush=True)
                return [stored[f"map_{i}"] for i in range(len(ids))]
    start = time.perf_counter()
    if in_frame:
        teacher.network.to(device)  # (the plugin's inference runs on the device the network is on)
        maps = framed_teacher_maps(teacher, images, labels, tta)
    else:
        maps = teacher_maps(teacher.network, images, device, tta)
    np.savez(cache, key=np.array(key), **{f"map_{i}": m for i, m in enumerate(maps)})
    print(f"teacher maps of {len(maps)} images in {(time.perf_counter() - start) / 60:.1f} min -> {cache}", flush=True)
    return maps


def grow_depth(network: torch.nn.Module, shallower: torch.nn.Module, added: int) -> tuple[int, int]:
    """Copy the tensors of a UNet or UNet++ with ``added`` fewer pooling steps into ``network``.

    Both share their top levels: the UNet's encoders keep their indices and its
    decoders and upsamplers, counted from the deepest, move ``added`` places down;
    UNet++'s nodes ``X[i][j]`` and first heads keep their names. The new deepest
    levels keep their random initialisation. Returns (tensors copied, tensors).
    """
    target = network.state_dict()
    copied = 0
    for name, tensor in shallower.state_dict().items():
        parts = name.split(".")
        if parts[0] in ("upsamplers", "decoders") and parts[1].isdigit():
            parts[1] = str(int(parts[1]) + added)
        renamed = ".".join(parts)
        if renamed in target and target[renamed].shape == tensor.shape:
            target[renamed] = tensor.to(target[renamed].dtype)
            copied += 1
    network.load_state_dict(target)
    return copied, len(target)


def at_diameter(image: np.ndarray, truth: np.ndarray, diameter: float | None) -> tuple[np.ndarray, np.ndarray]:
    """``image`` and ``truth`` resized so that the median nucleus is ``diameter`` pixels across (the
    true size, as a perfect estimate would give; None: as they are)."""
    measured = median_diameter(truth) if diameter else None
    if not measured:
        return image, truth
    factor = diameter / measured
    return rescale_image(image, factor), rescale_labels(truth, rescaled_shape(image.shape, factor))


def validate(network, pairs, device, threshold=0.5, min_size=10, log_gain=0.0) -> dict[str, float]:
    """Mean DSB2018 instance score and pooled pixel scores on ``pairs``."""
    network.eval()
    scores, confusion = [], np.zeros(4, dtype=np.int64)
    for image, truth in pairs:
        probabilities = predict_normalized(normalize_image(image, DEFAULT_PERCENTILES, log_gain), network, device=device)
        labels = labels_from_probabilities(probabilities, threshold, min_size=min_size, split=True)
        scores.append(instance_scores(labels, truth)["dsb_score"])
        confusion += pixel_confusion(labels, truth)
    return {"dsb_score": float(np.mean(scores)), **pixel_scores(confusion)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODEL_KWARGS), default="unet")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018"),
                        help="dsb2018 folder (images/ + labels/ + splits.json) or a Kaggle stage1_train folder")
    parser.add_argument("--train-split", default="train", help="split of splits.json to train on ('' = all)")
    parser.add_argument("--val-split", default="val", help="split to select the best epoch on ('' = none)")
    parser.add_argument("--extra-data", nargs="+", default=[], metavar="NAME=DIR",
                        help="more training sets, folders of images/ + labels/ (e.g. monuseg=../shared/data/monuseg2018/"
                             "train consep=../shared/data/consep/train); a val part is split off each "
                             "(every 7th source image) and scored with DSB2018's val")
    parser.add_argument("--diameter", type=float, default=None,
                        help=f"rescale every image so its median nucleus is this many pixels across (+-30%% jitter), "
                             f"and record it in the weights file (e.g. {DEFAULT_DIAMETER:g}); default: random scale "
                             "0.6-1.6 and no diameter, as before")
    parser.add_argument("--log-gain", type=float, default=0.0,
                        help=f"logarithmic compression after the percentile normalisation (e.g. {DEFAULT_LOG_GAIN:g}; "
                             "0: linear, as before); recorded in the weights file")
    parser.add_argument("--epoch-size", type=int, default=None,
                        help="crops per epoch (default: one per training image)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--crop-size", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--low-res", type=float, default=0.0, metavar="P",
                        help="share of crops shrunk 1.5-6x and enlarged back, as the plugin enlarges images of tiny "
                             "nuclei (napari_nucleiseg.learn.augment.coarsen); the best epoch is then chosen on DSB2018 val "
                             "coarsened 4x as well, each val set weighing the same")
    parser.add_argument("--sampling", choices=("uniform", "balanced"), default="uniform",
                        help="uniform: every image once per epoch; balanced: images drawn (with replacement) so that "
                             "fluorescence, tissue and brightfield images make up "
                             + "/".join(f"{share:.0%}" for share in BALANCED_SHARES.values()).replace("%", "%%")
                             + " of the crops")
    parser.add_argument("--shares", nargs="+", type=parse_share, default=None, metavar="KIND=SHARE",
                        help="with --sampling balanced, the share of the crops of each kind (fluorescence, tissue, "
                             "brightfield and each --extra-data name), e.g. brightfield=0.15; kinds not named keep "
                             "their default share, and the shares are then made to add up to 1")
    parser.add_argument("--schedule", choices=("plateau", "cosine"), default="plateau",
                        help="plateau: halve the learning rate after 3 epochs without val improvement; cosine: anneal "
                             "it from --lr to --lr/100 over --epochs (for continuing a trained model with --init)")
    parser.add_argument("--teacher", type=Path, default=None,
                        help="weights file of a trained model (e.g. weights/hrnet.safetensors) to distil: its "
                             "probabilities on each training image, warped with the crop, become extra soft targets "
                             "(cached in <out>/teacher.npz)")
    parser.add_argument("--teacher-tta", action="store_true",
                        help="average the teacher's probabilities over 4 flips/transpositions (4x its time, once)")
    parser.add_argument("--distill-weight", type=float, default=0.5,
                        help="with --teacher, the share of the loss that goes towards the teacher (0-1)")
    parser.add_argument("--head-weights", type=float, nargs="+", default=None,
                        help="UNet++: the weight of each deep-supervision head's loss, shallowest first (default: "
                             "equal), e.g. 1 2 2 to favour the deeper heads; heads weighted 0 are left out of "
                             "inference too (the file's heads)")
    parser.add_argument("--contact-weight", type=float, default=1.0,
                        help="weight of the pixels where two nuclei touch in the cross-entropy (the U-Net "
                             "paper's weight map; 1: as any pixel)")
    parser.add_argument("--patience", type=int, default=8, help="epochs without val improvement before stopping")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    parser.add_argument("--init", type=Path, default=None,
                        help="start from the tensors of a weights file (e.g. weights/unet.safetensors) instead of "
                             "random ones: continues training the shipped models when no checkpoint is left; a "
                             "shallower UNet or UNet++ (--depth) gives the levels it has, the deepest start new")
    parser.add_argument("--depth", type=int, default=None,
                        help="pooling steps of a UNet or UNet++ (default: the bundled models', "
                             + ", ".join(f"{m} {k['depth']}" for m, k in MODEL_KWARGS.items() if "depth" in k) + ")")
    parser.add_argument("--time-budget", type=float, default=None, help="minutes; stop after the epoch that passes it")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="data loading processes")
    parser.add_argument("--limit", type=int, default=None, help="use only this many images of each split (smoke tests)")
    parser.add_argument("--max-batches", type=int, default=None, help="batches per epoch (smoke tests)")
    args = parser.parse_args(argv)
    if not 0 <= args.low_res <= 1:
        parser.error(f"--low-res is a share of the crops, between 0 and 1, not {args.low_res}")
    crop_shares(args)  # a misspelt --shares kind stops here, before minutes of loading data
    return args


@dataclass
class TrainingData:
    """The training pairs (with the set each comes from and its id) and the val parts by set."""

    pairs: list
    sets: list[str]
    ids: list[str]
    val_sets: dict[str, list]


#: With ``--low-res``, DSB2018's val images at the diameter are also scored shrunk this many times
#: and enlarged back (as the plugin sees val x0.25), so the best epoch is chosen on tiny nuclei too.
LOW_RES_VAL, LOW_RES_VAL_FACTOR = "dsb2018_coarse", 4.0


def load_training_data(args: argparse.Namespace) -> TrainingData:
    """DSB2018's split and every ``--extra-data`` set (its val part held out), val parts brought to
    ``--diameter``; with ``--low-res``, DSB2018's val once more, coarsened (:data:`LOW_RES_VAL`)."""
    train_ids = list_ids(args.data, args.train_split or None)[: args.limit]
    val_ids = list_ids(args.data, args.val_split)[: args.limit] if args.val_split else []
    pairs = [load_pair(args.data, i) for i in train_ids]
    val_sets = {"dsb2018": [load_pair(args.data, i) for i in val_ids]} if val_ids else {}
    sets = ["dsb2018"] * len(pairs)
    for entry in args.extra_data:
        name, _, folder = entry.partition("=")
        if not folder:
            raise SystemExit(f"--extra-data takes NAME=DIR, not {entry!r}")
        extra_train, extra_val = holdout_split(list_ids(Path(folder), None))
        extra_train, extra_val = extra_train[: args.limit], extra_val[: args.limit]
        pairs += [load_pair(Path(folder), i) for i in extra_train]
        sets += [name] * len(extra_train)
        if args.val_split:
            val_sets[name] = [load_pair(Path(folder), i) for i in extra_val]
        train_ids = train_ids + [f"{name}/{i}" for i in extra_train]
    if args.diameter:
        val_sets = {name: [at_diameter(image, truth, args.diameter) for image, truth in group]
                    for name, group in val_sets.items()}
        if args.low_res and val_sets.get("dsb2018"):
            val_sets[LOW_RES_VAL] = [(coarsened(image, LOW_RES_VAL_FACTOR), truth) for image, truth in val_sets["dsb2018"]]
    return TrainingData(pairs, sets, train_ids, val_sets)


def build_network(args: argparse.Namespace, device) -> tuple[torch.nn.Module, dict, dict | None]:
    """The network of ``--model`` (and ``--depth``), initialised from ``--init`` if given; its
    architecture arguments, and what the file it continues recorded of its training."""
    kwargs = dict(MODEL_KWARGS[args.model])
    if args.depth is not None:
        if "depth" not in kwargs:
            raise SystemExit(f"--depth applies to unet and unetpp, not {args.model}")
        kwargs["depth"] = args.depth
    network = build_model(args.model, **kwargs).to(device)
    if args.init is None:
        return network, kwargs, None
    initial = load_weights(args.init)
    before = initial.metadata["kwargs"]
    if initial.metadata["architecture"] == args.model and before == kwargs:
        network.load_state_dict(initial.network.state_dict())
    elif (initial.metadata["architecture"] == args.model and "depth" in kwargs
          and dict(before, depth=kwargs["depth"]) == kwargs and before["depth"] < kwargs["depth"]):
        copied, total = grow_depth(network, initial.network, kwargs["depth"] - before["depth"])
        print(f"{copied} of {total} tensors from the depth-{before['depth']} model, the rest new", flush=True)
    else:
        raise SystemExit(f"{args.init.name} holds a {initial.metadata['architecture']} {before}, "
                         f"not a {args.model} {kwargs} (or a shallower one)")
    print(f"initialised from {args.init}", flush=True)
    earlier = initial.metadata.get("training", {})
    continued_from = {"file": str(args.init), "kwargs": before,
                      **{k: earlier[k] for k in CONTINUED_KEYS if k in earlier}}
    return network, kwargs, continued_from


#: What a file records of the training of the file it continued (and so on back): enough for the
#: model card to tell every run, with no need to read the commands.
CONTINUED_KEYS = ("epochs", "minutes", "command", "teacher", "head_weights", "contact_weight", "continued_from")


def choose_head_weights(args: argparse.Namespace, network: torch.nn.Module) -> tuple[float, ...] | None:
    """``--head-weights`` checked against the network; a head weighted 0 is left out of its inference."""
    if args.head_weights is None:
        return None
    heads = len(network.heads) if hasattr(network, "forward_all") else 1
    if heads == 1 or len(args.head_weights) != heads or min(args.head_weights) < 0 or sum(args.head_weights) <= 0:
        raise SystemExit(f"--head-weights needs {heads} non-negative weights, not all 0, for this model"
                         if heads > 1 else f"--head-weights applies to UNet++, not {args.model}")
    head_weights = tuple(args.head_weights)
    if 0 in head_weights:  # an untrained head would only blur the average: validate (and save) without it
        network.inference_heads = tuple(i for i, weight in enumerate(head_weights) if weight > 0)
    return head_weights


def parse_share(text: str) -> tuple[str, float]:
    """``"brightfield=0.15"`` -> ``("brightfield", 0.15)`` (``--shares``)."""
    kind, _, value = text.partition("=")
    try:
        share = float(value)
    except ValueError:
        share = -1.0
    if not kind or not share >= 0:
        raise argparse.ArgumentTypeError(f"expected KIND=SHARE with a share >= 0, e.g. brightfield=0.15; got {text!r}")
    return kind, share


def sampling_shares(defaults: dict[str, float], chosen: list[tuple[str, float]] | None) -> dict[str, float]:
    """``defaults`` with the ``chosen`` kinds' shares in their place, made to add up to 1."""
    shares = dict(defaults)
    for kind, share in chosen or []:
        if kind not in shares:
            raise SystemExit(f"--shares: unknown kind {kind!r}; expected one of {', '.join(shares)}")
        shares[kind] = share
    total = sum(shares.values())
    return {kind: share / total for kind, share in shares.items()}


def crop_shares(args: argparse.Namespace) -> dict[str, float]:
    """The share of the crops each kind of image gets with ``--sampling balanced``."""
    return sampling_shares(BALANCED_SHARES_WITH_TISSUE if args.extra_data else BALANCED_SHARES, args.shares)


def make_loader(args: argparse.Namespace, data: TrainingData, dataset: CropDataset, first_epoch: int) -> DataLoader:
    """Batches of ``--epoch-size`` crops an epoch, drawn ``--sampling`` (balanced: by kind of image)."""
    generator = torch.Generator().manual_seed(args.seed + first_epoch)
    epoch_size = args.epoch_size or len(data.pairs)
    if args.sampling == "balanced":
        kinds = [image_kind(image) if name == "dsb2018" else name for (image, _), name in zip(data.pairs, data.sets)]
        shares = crop_shares(args)
        print("kinds: " + ", ".join(f"{kinds.count(k)} {k} ({shares[k]:.0%} of the crops)" for k in shares), flush=True)
        sampler = WeightedRandomSampler(balanced_weights(kinds, shares), epoch_size, generator=generator)
    elif args.epoch_size:
        sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=epoch_size, generator=generator)
    else:
        sampler = None
    return DataLoader(dataset, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=True,
                      generator=generator, num_workers=args.workers,
                      worker_init_fn=worker_init if args.workers else None, persistent_workers=False)


def validation_scores(network, data: TrainingData, args: argparse.Namespace, device, losses: list[float]) -> dict:
    """The epoch's val scores, each set counting the same (a few MoNuSeg images weigh as much as
    DSB2018's 68), with each set's own DSB2018 score; without val, minus the mean loss."""
    if not any(data.val_sets.values()):
        return {"dsb_score": -float(np.mean(losses))}
    by_set = {name: validate(network, pairs, device, log_gain=args.log_gain) for name, pairs in data.val_sets.items()}
    scores = {key: float(np.mean([s[key] for s in by_set.values()])) for key in next(iter(by_set.values()))}
    if len(by_set) > 1:
        scores.update({f"dsb_score_{name}": s["dsb_score"] for name, s in by_set.items()})
    return scores


def build_metadata(args: argparse.Namespace, *, network: torch.nn.Module, kwargs: dict, data: TrainingData,
                   epoch: int, minutes: float, scores: dict, command: str, continued_from: dict | None,
                   head_weights: tuple[float, ...] | None, device) -> dict:
    """The metadata of a weights file written after ``epoch``: how to rebuild and run the network,
    and everything about its training that the model card tells."""
    extra = [entry.partition("=") for entry in args.extra_data]
    return {
        "name": args.model,
        "architecture": args.model,
        "kwargs": kwargs,
        "normalization": {"method": "percentile", "percentiles": list(DEFAULT_PERCENTILES),
                          **({"log_gain": args.log_gain} if args.log_gain else {})},
        **({"diameter": args.diameter} if args.diameter else {}),
        "licence": licence_note(data.sets),
        "threshold": 0.5, "boundary_threshold": 0.5, "min_size": 10,
        **({"heads": list(network.inference_heads)} if getattr(network, "inference_heads", None) else {}),
        "training": {
            "data": f"DSB2018 stage1_train (fixed masks), split {args.train_split!r}: {data.sets.count('dsb2018')} images"
                    + "".join(f"; {name} ({folder}, val part held out): {data.sets.count(name)} images"
                              for name, _, folder in extra),
            "epochs": epoch, "crop_size": args.crop_size, "batch_size": args.batch_size, "lr": args.lr,
            "seed": args.seed, "sampling": args.sampling,
            **({"low_res": args.low_res} if args.low_res else {}),
            **({"shares": {kind: round(share, 4) for kind, share in crop_shares(args).items()}}
               if args.sampling == "balanced" else {}),
            "schedule": args.schedule, "minutes": round(minutes, 1),
            "device": str(device),
            "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
            "parameters": sum(p.numel() for p in network.parameters()), "command": command,
            **({"continued_from": continued_from} if continued_from else {}),
            **({"teacher": {"file": str(args.teacher), "tta": args.teacher_tta,
                            "weight": args.distill_weight}} if args.teacher else {}),
            **({"head_weights": list(head_weights)} if head_weights else {}),
            **({"contact_weight": args.contact_weight} if args.contact_weight != 1.0 else {}),
        },
        "metrics": {"val_during_training": {k: round(v, 4) for k, v in scores.items()}},
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    command = "python -m training.train " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)

    data = load_training_data(args)
    print(f"{args.model}: {len(data.pairs)} training images, validation images "
          + ", ".join(f"{len(p)} {n}" for n, p in data.val_sets.items()), flush=True)
    network, kwargs, continued_from = build_network(args, device)
    head_weights = choose_head_weights(args, network)
    optimizer = torch.optim.Adam(network.parameters(), lr=args.lr)
    if args.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs, eta_min=args.lr / 100)
    else:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=3)
    state = {"epoch": 0, "best_score": float("-inf"), "best_epoch": 0, "elapsed": 0.0, "history": []}
    checkpoint_path = args.out / "checkpoint.pt"
    if args.resume and checkpoint_path.is_file():
        checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=False)
        network.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        state = checkpoint["state"]
        print(f"resumed from epoch {state['epoch']} (best {state['best_score']:.4f})", flush=True)

    soft = None
    if args.teacher is not None:
        if not 0 <= args.distill_weight <= 1:
            raise SystemExit(f"--distill-weight must be between 0 and 1, not {args.distill_weight}")
        soft = cached_teacher_maps(args.out / "teacher.npz", args.teacher, data.ids,
                                   [image for image, _ in data.pairs], device, args.teacher_tta,
                                   [labels for _, labels in data.pairs])
    dataset = CropDataset(data.pairs, args.crop_size, args.seed, soft, args.diameter, args.log_gain,
                          low_res=args.low_res)
    loader = make_loader(args, data, dataset, state["epoch"])
    start = time.perf_counter() - state["elapsed"]
    while state["epoch"] < args.epochs:
        epoch = state["epoch"] + 1
        dataset.reseed(args.seed * 1000 + epoch)
        losses = train_steps(network, optimizer, itertools.islice(loader, args.max_batches), device=device,
                             distill_weight=args.distill_weight, head_weights=head_weights,
                             contact_weight=args.contact_weight)
        scores = validation_scores(network, data, args, device, losses)
        if args.schedule == "cosine":
            scheduler.step()
        else:
            scheduler.step(scores["dsb_score"])
        state["epoch"] = epoch
        state["elapsed"] = time.perf_counter() - start
        state["history"].append({"epoch": epoch, "loss": float(np.mean(losses)),
                                 "lr": optimizer.param_groups[0]["lr"], **scores})
        improved = scores["dsb_score"] > state["best_score"]
        if improved:
            state["best_score"], state["best_epoch"] = scores["dsb_score"], epoch
            metadata = build_metadata(args, network=network, kwargs=kwargs, data=data, epoch=epoch,
                                      minutes=state["elapsed"] / 60, scores=scores, command=command,
                                      continued_from=continued_from, head_weights=head_weights, device=device)
            save_weights(args.out / "best.safetensors", network, metadata)
        torch.save({"model": network.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "state": state}, checkpoint_path)
        per_set = "".join(f" {k[10:]} {v:.3f}" for k, v in scores.items() if k.startswith("dsb_score_"))
        print(f"epoch {epoch:3d}  loss {np.mean(losses):.4f}  val dsb {scores['dsb_score']:.4f}{per_set}  "
              f"mIoU {scores.get('mean_iou', float('nan')):.4f}  lr {optimizer.param_groups[0]['lr']:.1e}  "
              f"{state['elapsed'] / 60:.1f} min{'  *' if improved else ''}", flush=True)
        if epoch - state["best_epoch"] >= args.patience:
            print(f"early stop: no improvement for {args.patience} epochs", flush=True)
            break
        if args.time_budget is not None and state["elapsed"] > args.time_budget * 60:
            print(f"time budget of {args.time_budget} min reached", flush=True)
            break
    (args.out / "history.json").write_text(json.dumps(state["history"], indent=1))
    print(f"best epoch {state['best_epoch']}: val dsb {state['best_score']:.4f} -> {args.out / 'best.safetensors'}")
    return state


if __name__ == "__main__":
    main()
