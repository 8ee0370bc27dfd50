#!/usr/bin/env bash
# Launch verl's stock trainer with an e3core recipe from this folder.
#   bash adapters/verl/run_e3.sh e3_paper|e3_recommended [hydra overrides ...]
# Needs: pip install -e ".[verl]" in an e3core clone (verl 0.9.1; its plugin entry point registers e3core), GPUs,
# and a rollout engine (vLLM or SGLang). Typical overrides:
#   actor_rollout_ref.model.path=<hub id or folder>
#   data.train_files=<train.parquet> data.val_files=<test.parquet>   (verl's data format)
#   trainer.n_gpus_per_node=8 trainer.nnodes=1
#   ++e3.<setting>=<value>  (any E3Settings field, e.g. ++e3.loss_weighting=prompt)
set -euo pipefail
recipe=${1:?usage: run_e3.sh e3_paper|e3_recommended [overrides...]}
shift
here="$(cd "$(dirname "$0")" && pwd)"
exec python -m verl.trainer.main_ppo --config-path="$here" --config-name="$recipe" "$@"
