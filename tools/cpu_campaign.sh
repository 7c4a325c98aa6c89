#!/usr/bin/env bash
# The CPU accuracy campaign of issues 22, 23 and 24, one job at a time on the CPU, in this order:
#   1. main7_mirror.py at full length, n = 25 (issue 22)   a run: ~16 min on a 2-core AVX-512 BF16 EPYC, ~8 on AMX
#   2. main9_muon.py at full length, n = 10 (issue 24)     ~10.5 min on AMX (its step: ~1.5x main7's per image)
#   3. ternary94.py scouts at n = 2, each under its own --variant (issue 23): the defaults, then the next ones as
#      the plan in results/ternary94/README.md branches on the defaults' mean, then the 2.25x anchor
#      (a scout run: ~25 min for the defaults on AMX, ~1.2 s per TFLOP of `python -m reports search`)
# Restartable: every stage runs with --resume, so after a stop (a session's end kills it; the run in progress is
# lost, finished rows are in the logs) the same command goes on where the logs end. Each stage runs from a git
# worktree pinned at one commit, so that every row of a log names the same code; the rows go to this checkout's
# results/, to be committed as they land.
# Usage: nohup tools/cpu_campaign.sh > campaign.log 2>&1 &     (CIFAR10_DIR: the data; default ../shared/cifar10)
set -uo pipefail  # no -e: a stage that fails (a diverged config) is reported and the next one runs
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=$(realpath "${CIFAR10_DIR:-$ROOT/../shared/cifar10}")  # absolute: the stages run from their worktrees
OUT=$ROOT/results
mkdir -p "$ROOT/.models"

worktree_at() {  # WORKTREE COMMIT: the worktree, added at COMMIT when absent; fails if it holds another commit
    local tree=$1 commit=$2
    if [ ! -d "$tree" ]; then
        git -C "$ROOT" worktree prune && git -C "$ROOT" worktree add --detach "$tree" "$commit" || return 1
    fi
    if [ "$(git -C "$tree" rev-parse HEAD)" != "$(git -C "$ROOT" rev-parse "$commit^{commit}")" ]; then
        echo "error: $tree is not at $commit: remove it (git worktree remove $tree) and run again"
        return 1
    fi
}

stage() {  # WORKTREE COMMIT SCRIPT FLAGS...: a full-length CPU job from the code of COMMIT
    local tree=$1 commit=$2
    shift 2
    echo "=== $(date -u +%FT%TZ) $commit $*"
    worktree_at "$tree" "$commit" || return 1
    (cd "$tree" && python "$@" --device cpu --data-dir "$DATA" --out "$OUT" --resume --no-warmup)
    local status=$?  # read before anything else runs: $(date) in the line below would reset $? to 0
    [ "$status" -eq 0 ] || echo "=== $(date -u +%FT%TZ) failed (exit $status): $commit $*"
}

stage "$ROOT/../campaign" 02ea87b main7_mirror.py --runs 25
stage "$ROOT/../campaign-57d58cf" 57d58cf main9_muon.py --runs 10
# --export-packed: each scout's last model as a packed file, checked to reload to the same logits (issue 23);
# the check's line is in the campaign's log, the files in .models/ (git-ignored)
stage "$ROOT/../campaign-57d58cf" 57d58cf ternary94.py --runs 2 \
    --export-packed "$ROOT/.models/ternary94-defaults.tpk"            # the defaults: 1.5x widths, 15 epochs
# The scouts after the defaults: from a later commit (ternary94.py is the same file as at 57d58cf, so the rows
# carry the same script sha256), whose trials also record a diverged run (stats/diverged.py).
SCOUTS=e188705
scout() {  # VARIANT FLAGS...: a ternary94.py scout at n = 2, its last model exported and its reload checked
    local variant=$1
    shift
    stage "$ROOT/../campaign-$SCOUTS" $SCOUTS ternary94.py --runs 2 --variant "$variant" "$@" \
        --export-packed "$ROOT/.models/ternary94-$variant.tpk"
}
defaults_mean() {  # the defaults' scout mean TTA accuracy in percent, or nothing when it holds < 2 runs
    python -c 'import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print("%.2f" % (100 * sum(r["tta_val_acc"] for r in rows) / len(rows)) if len(rows) >= 2 else "")' \
        "$OUT/ternary94/ternary__cpu-bf16.jsonl" 2>/dev/null
}
MEAN=$(defaults_mean)
echo "=== $(date -u +%FT%TZ) the defaults' scout mean: ${MEAN:-none (fewer than 2 runs)}"
if [ -z "$MEAN" ]; then
    echo "=== no branch: the defaults' scout did not finish (see above)"
elif python -c "import sys; sys.exit(not float(sys.argv[1]) >= 94.15)" "$MEAN"; then  # cheaper nets
    scout w15-e12 --epochs 12                                          # 1.5x, 12 epochs (~910 TFLOPs)
    scout w125-e15 --block1 80 --block2 320 --block3 320              # 1.25x, 15 epochs (~830)
elif python -c "import sys; sys.exit(not float(sys.argv[1]) >= 93.85)" "$MEAN"; then  # same cost, other levers
    scout pc --ternary-per-channel                                     # one scale per output channel
    scout w15-e18 --epochs 18                                          # 1.5x, 18 epochs (~1,370)
else  # wider
    scout w2-e10 --block1 128 --block2 512 --block3 512 --epochs 10    # 2x, 10 epochs (~1,410)
    scout w175-e15 --block1 112 --block2 448 --block3 448              # 1.75x, 15 epochs (~1,620)
fi
# the anchor: 2.25x widths at 10 epochs, where casted_airbench's ternary net reached 94.2% (n = 10)
scout w225-e10 --block1 144 --block2 576 --block3 576 --epochs 10       # 2.25x, 10 epochs (~1,790)
