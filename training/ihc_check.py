"""Brown (DAB-positive) nuclei of IHC sections, and a prototype that reads brown as hematoxylin.

The networks learnt nuclei from hematoxylin (H&E, DSB2018's tissue images): in an IHC section (Ki-67, ER, PR,
p53: positive nuclei brown with DAB beside blue hematoxylin ones) they miss most brown nuclei. The prototype
here (:func:`read_brown_as_hematoxylin`) re-colours brown as hematoxylin before segment(). It is NOT part of
the plugin's pipeline: it helps where the marker is nuclear, and harms where it stains membranes or cytoplasm
(HER2, CD3, cytokeratin: brown rings become dark 'nuclei'; session 26's review: nuclei found 0.75-0.86 ->
0.36-0.58 with 6-px rings), and the plugin cannot tell the marker. It belongs behind a user's choice (a
"brown nuclei" option with a hint when brown is seen), which session 26 had no time to build.

No IHC images with nucleus labels are at hand, so each H&E image of a set is restained as an IHC section
(training.data.restain_as_ihc): hematoxylin only, and a share of its labelled nuclei brown with DAB. Per
image: the DSB2018 score of the H&E image and of the section, and the share of brown and of blue nuclei
found (IoU >= 0.5), without and with the prototype, through segment() at Auto. The restaining uses the very
stain vectors the prototype inverts, so its gains are an upper bound.

    python -m training.ihc_check --model hrnet --set monuseg_test --positive 0.25 [--limit N]

Test sets are measured here, never chosen on.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from napari_nucleiseg import preprocess, segment
from training.data import list_ids, load_pair, restain_as_ihc
from training.metrics import instance_scores

#: Optical density of one unit of a stain in red, green and blue (Ruifrok & Johnston 2001, as scikit-image's
#: ``rgb2hed``): hematoxylin, the blue-purple of every nucleus, absorbs red and green; DAB, the brown of
#: immunohistochemistry (a Ki-67 or p53 stain's positive nuclei), absorbs blue most.
HEMATOXYLIN_OD = (0.650, 0.704, 0.286)
DAB_OD = (0.268, 0.570, 0.776)
#: A colour image is one of stains in transmitted light (brightfield: H&E, IHC) when its median pixel is at
#: least this share of its white (each colour's :data:`STAIN_WHITE_PERCENTILE`; fluorescence: a dark
#: ground, the bundled sample 0.12; H&E tiles of MoNuSeg and CoNSeP 0.19-0.99, 0.38 and 0.63 at their 1st
#: percentile); its brown may then be read as hematoxylin (:func:`brown_as_hematoxylin`).
STAIN_BRIGHT_GROUND = 0.25
STAIN_WHITE_PERCENTILE = 99.5
#: A pixel is brown when its optical density in blue exceeds that in green by more than this (hematoxylin's
#: is 0.42 below, eosin's 0.88 below, DAB's 0.21 above per unit; weak DAB-positive nuclei about 0.14, strong
#: ones 0.4-0.5): the gray pixels of a brightfield image, and H&E's, are left as they are.
BROWN_MIN_EXCESS = 0.1

SETS = {"monuseg_test": "monuseg2018/test", "consep_test": "consep/test", "monuseg_train": "monuseg2018/train"}


def stain_white(rgb: np.ndarray) -> tuple[float, float, float] | None:
    """The white of the ``(H, W, 3)`` image ``rgb`` (or a sample of it), each colour's
    :data:`STAIN_WHITE_PERCENTILE`, when it shows stains in transmitted light that may hold brown: its
    median pixel is at least :data:`STAIN_BRIGHT_GROUND` of that white, and some pixel is brown
    (:data:`BROWN_MIN_EXCESS`: :func:`brown_as_hematoxylin` would change it); else None (gray, fluorescence,
    most H&E)."""
    pixels = np.asarray(rgb)[..., :3].reshape(-1, 3).astype(np.float64)
    pixels = pixels[np.isfinite(pixels).all(axis=1)]
    if pixels.size == 0:
        return None
    white = np.percentile(pixels, STAIN_WHITE_PERCENTILE, axis=0)
    if not (white > 0).all() or np.median(pixels.mean(axis=1)) < STAIN_BRIGHT_GROUND * white.mean():
        return None
    density = _optical_density(pixels, white)
    if not (density[:, 2] - density[:, 1] > BROWN_MIN_EXCESS).any():
        return None
    return float(white[0]), float(white[1]), float(white[2])


def _optical_density(pixels: np.ndarray, white: Any) -> np.ndarray:
    """float32 optical density of ``pixels`` (colour last) against ``white``, at most log(1000); a pixel
    brighter than white, or not finite, absorbs nothing."""
    pixels = np.asarray(pixels)
    exact = np.float64 if pixels.dtype == np.float64 else np.float32  # (a float64 image may exceed float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = pixels.astype(exact, copy=False) / np.asarray(white, dtype=exact)
    np.clip(np.nan_to_num(ratio, copy=False, nan=1.0), 1e-3, 1.0, out=ratio)
    return -np.log(ratio).astype(np.float32, copy=False)


def brown_as_hematoxylin(rgb: np.ndarray, white: tuple[float, float, float]) -> np.ndarray:
    """``rgb`` (colour last) as float32 (float64 stays float64) with its brown re-coloured as hematoxylin,
    against ``white`` (:func:`stain_white`): in each pixel whose optical density in blue exceeds that in
    green by more than :data:`BROWN_MIN_EXCESS` (only DAB does, of the usual stains), the DAB that explains
    the excess (all of it from twice that margin on, a share below; no more than the pixel's density holds)
    is replaced by as much hematoxylin. The networks learnt nuclei from hematoxylin (H&E, DSB2018's tissue
    images): a DAB-positive (brown) nucleus of an IHC stain was missed more often than not. Other pixels
    (H&E's purple and pink, gray, the glass) keep their values."""
    pixels = np.asarray(rgb)[..., :3]
    out = np.array(pixels, dtype=np.float64 if pixels.dtype == np.float64 else np.float32)  # (1e200 stays finite)
    green_blue = _optical_density(out[..., 1:], white[1:])
    excess = green_blue[..., 1] - green_blue[..., 0]
    brown = excess > BROWN_MIN_EXCESS
    if not brown.any():
        return out
    dab, hematoxylin = (np.asarray(od, np.float32) / np.linalg.norm(od) for od in (DAB_OD, HEMATOXYLIN_OD))
    od, excess = _optical_density(out[brown], white), excess[brown]
    # All of the DAB from twice the margin on, a share of it below (no edge where the margin is crossed).
    share = np.minimum((excess - BROWN_MIN_EXCESS) / BROWN_MIN_EXCESS, 1.0)
    amount = np.minimum(share * excess / (dab[2] - dab[1]), (od / dab).min(axis=1))
    od += amount[:, None] * (hematoxylin - dab)
    out[brown] = np.asarray(white, np.float64) * np.exp(-od.astype(np.float64))
    return out


def read_brown_as_hematoxylin(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` with its brown re-coloured as hematoxylin against its own white (:func:`stain_white`), or as it
    is when it holds no brown in transmitted light."""
    white = stain_white(preprocess._percentile_sample(preprocess.as_rgb(rgb)))
    return rgb if white is None else brown_as_hematoxylin(preprocess.as_rgb(rgb), white)


def found_share(labels: np.ndarray, truth: np.ndarray, nuclei: np.ndarray) -> float:
    """The share of the ``nuclei`` (labels of ``truth``) that ``labels`` holds at IoU >= 0.5; NaN for none."""
    found = 0
    for nucleus in nuclei:
        inside = truth == nucleus
        overlap = labels[inside][labels[inside] > 0]
        if overlap.size:
            best = labels == np.bincount(overlap).argmax()
            found += np.count_nonzero(inside & best) / np.count_nonzero(inside | best) >= 0.5
    return found / len(nuclei) if len(nuclei) else float("nan")


def measure(image: np.ndarray, truth: np.ndarray, brown: np.ndarray, blue: np.ndarray, model: str) -> list[float]:
    labels = segment(image, model=model).labels
    return [instance_scores(labels, truth)["dsb_score"], found_share(labels, truth, brown),
            found_share(labels, truth, blue)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="hrnet")
    parser.add_argument("--set", choices=sorted(SETS), default="monuseg_test")
    parser.add_argument("--positive", type=float, default=0.25, help="share of the nuclei made brown")
    parser.add_argument("--limit", type=int, help="at most this many images, spread over the set")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args(argv)
    root = args.data / SETS[args.set]
    ids = list_ids(root, None)
    if args.limit:
        ids = ids[:: max(1, len(ids) // args.limit)][: args.limit]
    rng = np.random.default_rng(0)
    rows = []
    print("image  H&E off / on  |  IHC off: score brown blue  |  IHC on: score brown blue", flush=True)
    for sample_id in ids:
        tissue, truth = load_pair(root, sample_id)
        nuclei = np.unique(truth[truth > 0])
        positive = rng.random(nuclei.size) < args.positive
        brown, blue = nuclei[positive], nuclei[~positive]
        section = restain_as_ihc(tissue, np.isin(truth, brown))
        off = measure(tissue, truth, brown, blue, args.model)[:1] + measure(section, truth, brown, blue, args.model)
        on = (measure(read_brown_as_hematoxylin(tissue), truth, brown, blue, args.model)[:1]
              + measure(read_brown_as_hematoxylin(section), truth, brown, blue, args.model))
        rows.append(off + on)
        print(f"{sample_id[:20]}  {off[0]:.3f} / {on[0]:.3f}  |  {off[1]:.3f} {off[2]:.2f} {off[3]:.2f}  |  "
              f"{on[1]:.3f} {on[2]:.2f} {on[3]:.2f}", flush=True)
    m = np.nanmean(np.array(rows), axis=0)
    print(f"{args.model} {args.set} ({len(rows)} images, {args.positive:.0%} of nuclei brown): H&E {m[0]:.3f} -> "
          f"{m[4]:.3f}; IHC section {m[1]:.3f} -> {m[5]:.3f}, brown nuclei found {m[2]:.0%} -> {m[6]:.0%}, "
          f"blue {m[3]:.0%} -> {m[7]:.0%}")


if __name__ == "__main__":
    main()
