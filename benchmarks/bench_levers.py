"""A/B comparison of the speed levers of CPU inference, interleaved so that background load hits all alike.

Each variant computes the probability maps of the same image; the rounds run the
variants in a new random order each time, and the table gives, per variant, the
median wall time, the median CPU time of this process (``time.process_time``: less
sensitive to other processes than wall time when running with one thread), the
speed-up over ``baseline`` on both, and the largest difference of its probabilities
from the baseline's and from whole-image inference.

Variants (``--variants``):

baseline        predict_normalized as shipped (balanced tiles of at most 512, one tile per pass,
                channels-last input, inference_mode)
no_grad         torch.no_grad instead of inference_mode (what inference_mode saves)
batchN          N tiles per forward pass (batch4: as before)
tile256 ...     largest tile size (any ``tileN``)
fixed_tiles     every tile of the largest size, as before balanced tiles
channels_last   the network's weights too in channels-last memory format (the input already is)
channels_first  input in (B, C, H, W) memory layout, as before channels-last input
fold_bn         batch norms folded into the preceding convolutions
bf16, fp16      torch.autocast to bfloat16 / float16 on the CPU
compile         torch.compile (its compile time is reported apart)
onnx            ONNX Runtime, network exported with torch.onnx (needs onnxruntime and onnx)
whole           the whole image in one forward pass (also the accuracy reference)

Levers combine with ``+``: ``batch4+fixed_tiles+channels_first`` is inference as it was
before this benchmark's levers were applied.

Example::

    python benchmarks/bench_levers.py --model unet --size 1024 --rounds 5 \\
        --variants baseline batch4+fixed_tiles+channels_first channels_last fold_bn onnx
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, machine_description, synthetic_image, weights_for  # noqa: E402

from napari_nucleiseg import inference  # noqa: E402
from napari_nucleiseg.preprocess import normalize_image  # noqa: E402
from napari_nucleiseg.weights import load_weights  # noqa: E402

#: Tile size of "whole": larger than any image benchmarked, so the image goes in one piece.
WHOLE_IMAGE = 1 << 20


class Autocast(nn.Module):
    def __init__(self, network: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.network, self.dtype = network, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=self.dtype):
            return self.network(x).float()


class NoGrad(nn.Module):
    """Runs the network under no_grad; predict_normalized's own inference_mode is undone around it."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(False), torch.no_grad():
            return self.network(x.clone())


class ChannelsFirst(nn.Module):
    """Feeds the network (B, C, H, W)-contiguous input: the layout before channels-last input."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x.contiguous())


class OnnxRuntime(nn.Module):
    """The network exported to ONNX and run by ONNX Runtime, behind the torch module interface."""

    def __init__(self, network: nn.Module, tile: int, threads: int) -> None:
        super().__init__()
        import onnxruntime

        path = Path(tempfile.mkdtemp(prefix="nucleiseg-onnx-")) / "model.onnx"
        example = torch.rand(1, 3, tile, tile)
        torch.onnx.export(
            network, (example,), str(path), input_names=["image"], output_names=["logits"],
            dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "height", 3: "width"}},
            opset_version=17, dynamo=False,
        )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {"image": x.numpy()})
        return torch.from_numpy(logits)


def fold_batch_norms(network: nn.Module) -> nn.Module:
    """A copy of ``network`` where every Conv2d directly followed by a BatchNorm2d in an
    ``nn.Sequential`` absorbs it (eval-mode arithmetic is identical up to rounding)."""
    network = copy.deepcopy(network)
    for module in network.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module._modules.items())
        for (_, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                with torch.no_grad():
                    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
                    bias = bn.bias - bn.running_mean * scale
                    if conv.bias is not None:
                        bias = bias + conv.bias * scale
                    conv.bias = nn.Parameter(bias)
                module._modules[bn_name] = nn.Identity()
    return network


def make_variant(name: str, network: nn.Module, normalized: np.ndarray, threads: int):
    """``(callable returning probabilities, setup seconds)`` for variant ``name``.

    Levers combine with ``+``, applied left to right: ``batch4+fixed_tiles``.
    """
    kwargs: dict = {"device": "cpu"}
    fixed_tiles = False
    start = time.perf_counter()
    size = max(normalized.shape[:2])
    for part in name.split("+"):
        if part == "baseline":
            pass
        elif part == "whole":
            kwargs["tile_size"] = WHOLE_IMAGE
        elif part == "no_grad":
            network = NoGrad(network)
        elif part == "fixed_tiles":
            fixed_tiles = True
        elif part.startswith("batch"):
            kwargs["batch_size"] = int(part[5:])
        elif part.startswith("tile"):
            kwargs["tile_size"] = int(part[4:])
        elif part == "channels_first":
            network = ChannelsFirst(network)
        elif part == "channels_last":
            network = copy.deepcopy(network).to(memory_format=torch.channels_last)
        elif part == "fold_bn":
            network = fold_batch_norms(network)
        elif part in ("bf16", "fp16"):
            network = Autocast(network, torch.bfloat16 if part == "bf16" else torch.float16)
        elif part == "compile":
            network = torch.compile(copy.deepcopy(network), dynamic=False)
        elif part == "onnx":
            network = OnnxRuntime(network, min(size, kwargs.get("tile_size", inference.TILE_SIZE)), threads)
        else:
            raise SystemExit(f"unknown lever {part!r} in variant {name!r}")

    def run() -> np.ndarray:
        if not fixed_tiles:
            return inference.predict_normalized(normalized, network, **kwargs)
        with mock.patch.object(inference, "_balanced_tile", lambda length, tile_size, overlap: tile_size):
            return inference.predict_normalized(normalized, network, **kwargs)

    run()  # warm-up: compiles, picks kernels; counted as setup
    return run, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="unet", choices=("unet", "unetpp", "hrnet"))
    parser.add_argument("--size", type=int, default=1024, help="square image side")
    parser.add_argument("--variants", nargs="+", default=["baseline", "batch4+fixed_tiles+channels_first", "channels_first", "channels_last", "fold_bn"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 by default: CPU time then measures work, even on a busy machine)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    print(f"Machine: {machine_description()}")
    paths, notes = weights_for([args.model])
    for note in notes:
        print(f"Note: {note}")
    model = load_weights(paths[args.model])
    normalized = normalize_image(synthetic_image(args.size, args.seed), model.percentiles)
    variants = list(dict.fromkeys(["baseline", *args.variants]))
    runs, setup = {}, {}
    for name in variants:
        runs[name], setup[name] = make_variant(name, model.network, normalized, args.threads)
    reference = runs["baseline"]()
    whole = runs["whole"]() if "whole" in runs else inference.predict_normalized(
        normalized, model.network, tile_size=WHOLE_IMAGE)
    wall = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    differences = {}
    order = random.Random(args.seed)
    for _ in range(args.rounds):
        order.shuffle(variants)
        for name in variants:
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            result = runs[name]()
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
            differences[name] = (float(np.abs(result - reference).max()), float(np.abs(result - whole).max()),
                                 float(((result[0] > 0.5) != (reference[0] > 0.5)).mean()))
    base_wall, base_cpu = statistics.median(wall["baseline"]), statistics.median(cpu["baseline"])
    rows = []
    for name in sorted(variants, key=lambda n: statistics.median(cpu[n])):
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        d_base, d_whole, flips = differences[name]
        rows.append([name, f"{1000 * w:.0f}", f"{base_wall / w:.2f}", f"{1000 * c:.0f}", f"{base_cpu / c:.2f}",
                     f"{1000 * (max(cpu[name]) - min(cpu[name])):.0f}", f"{d_base:.1e}", f"{d_whole:.1e}",
                     f"{100 * flips:.3f}", f"{setup[name]:.1f}"])
    print(f"\n{args.model}, {args.size}x{args.size}, {args.threads} thread(s), {args.rounds} interleaved rounds\n")
    print(format_table(["variant", "wall ms", "x wall", "CPU ms", "x CPU", "CPU spread ms", "max |d| base",
                        "max |d| whole", "% mask flips", "setup s"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
