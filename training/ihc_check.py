"""How many brown (DAB-positive) nuclei of IHC sections are found, with the Brown nuclei option off and on.

The networks learnt nuclei from hematoxylin (H&E, DSB2018's tissue images): in an IHC section (Ki-67, ER, PR,
p53: positive nuclei brown with DAB beside blue hematoxylin ones) they miss most brown nuclei. The plugin's
Brown nuclei option (``segment(brown_nuclei=True)``, :mod:`napari_nucleiseg.stains`) reads brown as
hematoxylin; it is off by default, since where the marker stains membranes or cytoplasm (HER2, CD3,
cytokeratin) brown rings would become dark 'nuclei' (session 26's review: nuclei found 0.75-0.86 -> 0.36-0.58
with 6-px rings), and the plugin cannot tell the marker.

No IHC images with nucleus labels are at hand, so each H&E image of a set is restained as an IHC section
(training.data.restain_as_ihc): hematoxylin only, and a share of its labelled nuclei brown with DAB. Per
image: the DSB2018 score of the H&E image and of the section, and the share of brown and of blue nuclei
found (IoU >= 0.5), with the option off and on, through segment() at Auto. The restaining uses the very
stain vectors the option inverts, so its gains are an upper bound.

    python -m training.ihc_check --model hrnet --set monuseg_test --positive 0.25 [--limit N]

Test sets are measured here, never chosen on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_nucleiseg import segment
from training.data import list_ids, load_pair, restain_as_ihc
from training.metrics import instance_scores

SETS = {"monuseg_test": "monuseg2018/test", "consep_test": "consep/test", "monuseg_train": "monuseg2018/train"}


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


def measure(image: np.ndarray, truth: np.ndarray, brown: np.ndarray, blue: np.ndarray, model: str,
            brown_nuclei: bool = False) -> list[float]:
    labels = segment(image, model=model, brown_nuclei=brown_nuclei).labels
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
        on = (measure(tissue, truth, brown, blue, args.model, brown_nuclei=True)[:1]
              + measure(section, truth, brown, blue, args.model, brown_nuclei=True))
        rows.append(off + on)
        print(f"{sample_id[:20]}  {off[0]:.3f} / {on[0]:.3f}  |  {off[1]:.3f} {off[2]:.2f} {off[3]:.2f}  |  "
              f"{on[1]:.3f} {on[2]:.2f} {on[3]:.2f}", flush=True)
    m = np.nanmean(np.array(rows), axis=0)
    print(f"{args.model} {args.set} ({len(rows)} images, {args.positive:.0%} of nuclei brown): H&E {m[0]:.3f} -> "
          f"{m[4]:.3f}; IHC section {m[1]:.3f} -> {m[5]:.3f}, brown nuclei found {m[2]:.0%} -> {m[6]:.0%}, "
          f"blue {m[3]:.0%} -> {m[7]:.0%}")


if __name__ == "__main__":
    main()
