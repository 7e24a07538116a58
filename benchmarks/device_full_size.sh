#!/usr/bin/env bash
# benchmarks/full_size_gpu.py on a GPU machine that holds PyTorch but not pet's
# other dependencies and cannot reach a package index or ../shared.
#
#   bash benchmarks/device_full_size.sh prepare   # here: wheels into .whl/, the IWSLT data into .gpu_shared/
#   bash benchmarks/device_full_size.sh run       # there, from the repository root (both folders carried along)
#
# `run` installs the wheels under /tmp/site, trains and scores under /tmp/full_size
# and copies results.json, the table and every stage's log tail to $OUT (or ./full_size_out).
set -euo pipefail
cd "$(dirname "$0")/.."

# Wheels for Python 3.12 (the GPU image's); antlr4-python3-runtime 4.9.3 (hydra's
# parser runtime) exists only as an sdist, so it is built here (pure Python).
WHEELS=(hydra-core==1.3.8 omegaconf==2.3.0 sacremoses==0.1.1 subword-nmt==0.3.8 mock==5.2.0 sacrebleu==2.6.0)

case "${1:-}" in
prepare)
    for path in /.whl/ /.gpu_shared/; do
        grep -qxF "$path" .git/info/exclude 2>/dev/null || echo "$path" >> .git/info/exclude
    done
    rm -rf .whl && mkdir -p .whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl "${WHEELS[@]}"
    python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
    shared="${SHARED:-../shared}"
    test -f "$shared/data/iwslt14/bpe/train.de" || { echo "no IWSLT data under $shared/data/iwslt14 (set SHARED=)"; exit 1; }
    rm -rf .gpu_shared && mkdir -p .gpu_shared/data/iwslt14
    cp -r "$shared/data/iwslt14/bpe" "$shared/data/iwslt14/orig" .gpu_shared/data/iwslt14/
    du -sh .whl .gpu_shared
    echo "now: run(command='bash benchmarks/device_full_size.sh run', carry=['.whl', '.gpu_shared'], timeout_s=600)"
    ;;
run)
    out="${OUT:-$PWD/full_size_out}"
    mkdir -p "$out"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    status=0
    timeout 560 python3 benchmarks/full_size_gpu.py --device cuda --shared .gpu_shared --out /tmp/full_size \
        --threads 4 2>&1 | tee "$out/full_size.log" || status=$?
    cp /tmp/full_size/results.json "$out/" 2>/dev/null || true
    for log in $(find /tmp/full_size -name stage.log | sort); do
        echo "== $log"; tail -n 15 "$log"
    done > "$out/stage_logs_tail.txt" 2>/dev/null || true
    exit "$status"
    ;;
*)
    echo "usage: $0 prepare|run" >&2
    exit 2
    ;;
esac
