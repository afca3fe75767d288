#!/usr/bin/env bash
# Run every benchmark and write the tables to benchmarks/results-<host>-<date>.md (and print them).
# Usage: bash benchmarks/run_all.sh [--quick]
#   --quick: small sizes and few repeats, to check the scripts work (numbers not for the README).
# Run it on an otherwise idle machine: background load inflates and scatters every number.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
if [[ -x .venv/bin/python && -z "${VIRTUAL_ENV:-}" && "$PYTHON" == python ]]; then PYTHON=.venv/bin/python; fi
XVFB=()
if [[ -z "${DISPLAY:-}" && -z "${WAYLAND_DISPLAY:-}" ]]; then XVFB=(xvfb-run -a); fi

if [[ "${1:-}" == "--quick" ]]; then
    INFERENCE=(--sizes 256 1024 --repeats 2)
    GUI=(--size 1024 --repeats 3)
    POST=(--size 1024 --repeats 2)
    LEVERS=(--size 1024 --rounds 2)
else
    INFERENCE=(--sizes 256 1024 4096 --repeats 5)
    GUI=(--size 2048 --repeats 5)
    POST=(--size 2048 --repeats 5)
    LEVERS=(--size 1024 --rounds 5)
fi

out="benchmarks/results-$(hostname)-$(date +%Y%m%d-%H%M).md"
{
    echo "# Benchmark results, $(date -u +'%Y-%m-%d %H:%M UTC')"
    echo
    echo '## Inference (bench_inference.py)'
    echo
    "$PYTHON" benchmarks/bench_inference.py "${INFERENCE[@]}"
    echo '## Viewer, widget and import (bench_gui.py)'
    echo
    "${XVFB[@]}" "$PYTHON" benchmarks/bench_gui.py "${GUI[@]}"
    echo '## Post-processing steps (bench_postprocess.py)'
    echo
    "$PYTHON" benchmarks/bench_postprocess.py "${POST[@]}"
    echo
    echo '## Inference levers, UNet (bench_levers.py)'
    echo
    "$PYTHON" benchmarks/bench_levers.py --model unet --threads 2 "${LEVERS[@]}" \
        --variants baseline batch4+fixed_tiles+channels_first batch4 fixed_tiles channels_first channels_last fold_bn whole
} 2> >(grep -v -e Warning -e theme_type -e XDG_RUNTIME -e 'PyQt5 backend' >&2) | tee "$out"
echo "Written to $out" >&2
