#!/bin/bash
# The `ppokit tune` figures of benchmarks/RESULTS.md ("Hyperparameter search"): a study, then the
# study's best config against the config it started from, each trained again over seeds 1-3 at
# the study's budget and evaluated deterministically (20 episodes).
#
#   benchmarks/tune_figures.sh pendulum OUT      # Pendulum-v1 from the pendulum preset
#   benchmarks/tune_figures.sh reacher OUT       # Reacher-v5 (no preset) from the MuJoCo recipe
#   benchmarks/tune_figures.sh compare OUT BASE_FLAGS...   # only the comparison, for a finished study
#
# Studies take long on a CPU (see RESULTS.md for their wall time); they continue where they
# stopped when run again with the same OUT.
set -euo pipefail
PPOKIT=${PPOKIT:-ppokit}
what=$1 out=$2
shift 2

compare() {  # compare OUT BASE_FLAGS...: best.yaml vs the base config, seeds 1-3
  local out=$1
  shift
  for S in 1 2 3; do
    $PPOKIT train --config "$out/best.yaml" --seed $S --eval.episodes 20 --log.progress false \
      --run-dir "$out/compare/tuned-s$S" > "$out/compare/tuned-s$S.log" 2>&1
    $PPOKIT train "$@" --seed $S --eval.episodes 20 --log.progress false \
      --run-dir "$out/compare/base-s$S" > "$out/compare/base-s$S.log" 2>&1
  done
  for run in "$out"/compare/*/; do
    echo "$(basename "$run"): $(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['mean_return'])" "$run/eval.json")"
  done
}

case $what in
  pendulum)
    time $PPOKIT tune --preset pendulum --trials 30 --steps 100000 --jobs 2 --sampler-seed 1 \
      --eval-episodes 10 --timeout 3000 --out "$out"
    mkdir -p "$out/compare"
    compare "$out" --preset pendulum --total_steps 100000
    ;;
  reacher)
    time $PPOKIT tune --env Reacher-v5 --set algo.compile=false --trials 20 --steps 100000 \
      --jobs 1 --sampler-seed 1 --eval-episodes 10 --timeout 3600 --out "$out"
    mkdir -p "$out/compare"
    compare "$out" --env Reacher-v5 --algo.compile false --total_steps 100000
    ;;
  compare)
    mkdir -p "$out/compare"
    compare "$out" "$@"
    ;;
  *)
    echo "usage: $0 pendulum|reacher|compare OUT [BASE_FLAGS...]" >&2
    exit 2
    ;;
esac
