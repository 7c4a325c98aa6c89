#!/bin/bash
# The GPU evidence plan: every measurement the README's tables need, in phases that each fit one
# 10-minute command and can be run again at will. Every training job uses --resume, so a phase that was cut
# off finishes its seeds the next time and a finished one costs nothing; every row lands in results/ as
# its run ends, and results/ is copied to $OUT every 15 s, so rows come back even from a killed command.
#
#   bash tools/gpu_evidence.sh PHASE        PHASE: quick smoke final ladder-a ladder-b resnet sidebyside
#                                                  sidebyside-compiled compile-modes ternary ternary-kd ternary94
#                                                  muon dtypes
# `quick` is the plan for a session with 15 device-minutes: one ~8-minute command, most important first (GPU-only
# tests, main8 and main7 at n=10, the kernel table, ternary94 at n=3, 5 side-by-side pairs, then more seeds of
# main8 and main7 while the budget lasts, main9 at n=5); run it again to add seeds (--resume).
# Settings (environment): DATA (CIFAR-10 folder, default .cifar/data), OUT (where results/ is copied,
# default $OUT or /tmp/gpu-evidence), BUDGET (seconds before no new job starts, default 560), REF (folder
# with airbench94.py and airbench94_compiled.py from github.com/KellerJordan/cifar10-airbench legacy/, and
# airbench94_muon.py from its root, default .reference/src; git-ignored, never committed: fill it from a clone with
#   git -C CLONE show HEAD:legacy/airbench94.py > .reference/src/airbench94.py   (and airbench94_compiled.py)
#   git -C CLONE show HEAD:airbench94_muon.py > .reference/src/airbench94_muon.py
# and on the device machine carry .reference/src along with the checkout: not .reference, which after a local
# run also holds ~185 MB of data files, over the 64 MiB carry limit).
#
# Rough H100 cost per phase, from the published A100 times (not yet measured here): smoke ~6 min (first seed
# of every script plus its warm-up, the loader and kernel benchmarks), final ~8 min (main8 and main7, n=50),
# ladder-a/-b ~8 min each (main0-main3 / main4-main6, n=25), resnet ~4 min (n=5), sidebyside ~3 min and
# sidebyside-compiled ~6 min (10 pairs; max-autotune compilation of the reference), compile-modes ~5 min
# (main8 in its own max-autotune mode, in default mode and in max-autotune-no-cudagraphs, n=10 each, for the
# time ratios), ternary
# ~10 min (every rung, n=10), ternary-kd ~3 min, ternary94 ~6 min (n=25), muon ~6 min (main9 n=25, 10 pairs against
# airbench94_muon.py), dtypes ~4 min (main8 in bf16 and in fp32 beside its fp16 log, n=10 each: what --dtype costs).
set -u
cd "$(dirname "$0")/.."
PHASE=${1:?usage: bash tools/gpu_evidence.sh PHASE (see the top of this file)}
DATA=${DATA:-.cifar/data}
OUT=${OUT:-/tmp/gpu-evidence}
REF=${REF:-.reference/src}
mkdir -p "$OUT"
if [ ! -f "$DATA/cifar-10-batches-bin/test_batch.bin" ]; then
    echo "error: no CIFAR-10 binary version under $DATA: copy it there first, or set DATA"; exit 3
fi
DEADLINE=$(( $(date +%s) + ${BUDGET:-560} ))

save() { mkdir -p "$OUT" && cp -r results "$OUT/"; }
( while sleep 15; do save; done ) & SAVER=$!
trap 'kill $SAVER 2>/dev/null; save' EXIT

job() {  # job COMMAND...: runs it under what is left of the budget; never starts one with under 30 s left
    local left=$(( DEADLINE - $(date +%s) ))
    if [ $left -lt 30 ]; then echo "== skipped, budget spent: $*"; return; fi
    echo "== $* (budget left ${left} s)"
    # TERM: a rung stops with one line, keeping its finished runs; KILL 45 s later if it does not
    timeout --signal=TERM -k 45 $left "$@" 2>&1 | grep -v '^|' | tail -n 8  # the summary, not the epoch table
}
runs() {  # runs SCRIPT N [FLAGS...]: seeds 0..N-1 of SCRIPT, only those the log lacks
    local script=$1 n=$2; shift 2
    job python "$script" --data-dir "$DATA" --runs "$n" --resume "$@"
}
packed_ternary94() {  # packed_ternary94 N: ternary94 to N seeds, its last model exported and its reload checked on
    # CUDA (W_q from the Triton kernel); with no seed left nothing is exported, and that is said, not passed over
    rm -f "$OUT/ternary94.tpk"
    runs ternary94.py "$1" --export-packed "$OUT/ternary94.tpk"
    [ -f "$OUT/ternary94.tpk" ] || echo "== no packed export checked: no ternary94 run this time (or it failed, above)"
}

LADDER=$(python -c "from reports.ladder import LADDER; print(' '.join(rung.script for rung in LADDER))")
case "$PHASE" in
quick)
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,power.limit --format=csv
    job python -m pytest -q -x tests/test_ternary_kernels.py tests/test_augment.py -k 'cuda or triton or kernel'
    runs main8_compile.py 10; runs main7_mirror.py 10
    job python -m ternary.bench
    packed_ternary94 3
    if [ -f "$REF/airbench94_compiled.py" ]; then
        job python -m reports sidebyside main8_compile.py "$REF/airbench94_compiled.py" --pairs 5 --data-dir "$DATA"
    else echo "== skipped side by side: no $REF/airbench94_compiled.py (see the top of this file)"; fi
    runs main8_compile.py 50; runs main7_mirror.py 25; runs main9_muon.py 5 ;;
smoke)
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,power.limit --format=csv
    job python -m pytest -q tests/test_ternary_kernels.py tests/test_ternary.py
    job python -m airbench.bench --data-dir "$DATA"
    job python -m ternary.bench
    for script in $LADDER train_resnet18.py ternary94.py; do runs "$script" 1; done ;;
final)     runs main8_compile.py 50; runs main7_mirror.py 50 ;;
ladder-a)  for script in main0_network.py main1_whiten.py main2_dirac.py main3_scalebias.py; do runs "$script" 25; done ;;
ladder-b)  for script in main4_freeze.py main5_lookahead.py main6_tta.py; do runs "$script" 25; done ;;
resnet)    runs train_resnet18.py 5 ;;
sidebyside)
    job python -m reports sidebyside main7_mirror.py "$REF/airbench94.py" --pairs 10 --data-dir "$DATA" ;;
sidebyside-compiled)  # 2 pairs first: if max-autotune compiling eats the budget, the rerun finds Inductor's cache warm
    job python -m reports sidebyside main8_compile.py "$REF/airbench94_compiled.py" --pairs 2 --data-dir "$DATA"
    job python -m reports sidebyside main8_compile.py "$REF/airbench94_compiled.py" --pairs 8 --data-dir "$DATA" ;;
compile-modes)  # main8's own mode (max-autotune, in the full log) against default and no CUDA graphs
    runs main8_compile.py 10
    runs main8_compile.py 10 --variant mode-default --compile-mode default
    runs main8_compile.py 10 --variant mode-no-cudagraphs --compile-mode max-autotune-no-cudagraphs
    for mode in default no-cudagraphs; do
        job python -m reports compare results/main8_compile/full__*.jsonl results/main8_compile/mode-${mode}__*.jsonl
    done ;;
ternary)   for script in $LADDER; do runs "$script" 10 --ternary; done ;;
ternary-kd)
    [ -f .teacher/main8.pt ] || job python main8_compile.py --data-dir "$DATA" --variant teacher --save-model .teacher/main8.pt
    runs main8_compile.py 10 --ternary --teacher .teacher/main8.pt ;;
ternary94) packed_ternary94 25 ;;
muon)
    runs main9_muon.py 25
    if [ -f "$REF/airbench94_muon.py" ]; then
        job python -m reports sidebyside main9_muon.py "$REF/airbench94_muon.py" --pairs 10 --data-dir "$DATA"
    else echo "== skipped side by side: no $REF/airbench94_muon.py (see the top of this file)"; fi
    job python -m reports compare results/main8_compile/full__*-fp16.jsonl results/main9_muon/full__*-fp16.jsonl ;;
dtypes)  # --dtype on CUDA: fp16 (auto, the full log) against bf16 autocast and fp32, same seeds
    runs main8_compile.py 10
    for dtype in bf16 fp32; do
        runs main8_compile.py 10 --dtype $dtype
        job python -m reports compare results/main8_compile/full__*-fp16.jsonl results/main8_compile/full__*-${dtype}.jsonl
    done ;;
*) echo "error: unknown phase '$PHASE': see the top of tools/gpu_evidence.sh"; exit 2 ;;
esac
