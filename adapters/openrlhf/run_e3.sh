#!/usr/bin/env bash
# E3 on OpenRLHF 0.11 (Ray + vLLM + DeepSpeed) through e3core's launcher, which takes every flag of
# `python -m openrlhf.cli.train_ppo_ray` plus the E3 settings as --e3.<name>.
#
#   ray start --head --num-gpus 8
#   MODEL=deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B DATA=train.jsonl REWARD=reward.py \
#       bash adapters/openrlhf/run_e3.sh paper [more flags ...]
#
# RECIPE: "paper" (the E3 paper's setting: rank allocation 8..8 widened by 2 per epoch within
# 4..12, the E3 temperature rule annealed to 0.9) or "recommended" (e3core's: knapsack allocation of
# mixed groups under a refitted grid prior, 2..32 per prompt, PI entropy control within 0.5..1.5).
# Shared: 64 prompts x 8 samples per step, lr 5e-6, 3 epochs, no KL, clip 0.2, group_norm advantages.
# DATA: a jsonl/parquet/hub dataset with "problem" and "answer" fields; REWARD: OpenRLHF's
# --reward.remote_url (an http reward server, or a .py file with reward_func).
# E3_PRINT_ARGS=1 prints the launcher's arguments, one per line, instead of running.
set -euo pipefail
recipe=${1:?usage: run_e3.sh paper|recommended [more flags ...]}
shift
: "${MODEL:?set MODEL to a hub id or folder}"
: "${DATA:?set DATA to the prompt dataset}"
: "${REWARD:?set REWARD to the --reward.remote_url of OpenRLHF}"
GPUS=${GPUS:-8}

args=(
  --actor.model_name_or_path "$MODEL"
  --actor.num_gpus_per_node "$GPUS"
  --vllm.num_engines "$GPUS"
  --vllm.tensor_parallel_size 1
  --vllm.enable_sleep
  --train.colocate_all
  --data.prompt_dataset "$DATA"
  --data.input_key problem
  --data.label_key answer
  --data.apply_chat_template
  --reward.remote_url "$REWARD"
  --rollout.batch_size 64
  --rollout.n_samples_per_prompt 8
  --rollout.max_new_tokens 8192
  --rollout.temperature 1.0
  --train.batch_size 512
  --train.num_episodes 3
  --actor.adam.lr 5e-6
  --actor.eps_clip 0.2
  --actor.entropy_coef 0
  --algo.kl.init_coef 0
  --algo.advantage.estimator group_norm
  --ds.zero_stage 3
  --actor.gradient_checkpointing_enable
  --ckpt.save_steps 40
  --ckpt.path "${CKPT:-./ckpt/e3_$recipe}"
)
case "$recipe" in
  paper)
    args+=(
      --e3.allocator rank --e3.rank_by epoch_accuracy
      --e3.min_per_prompt 8 --e3.max_per_prompt 8
      --e3.widen_per_epoch 2 --e3.widen_min 4 --e3.widen_max 12
      --e3.refit_prior beta --e3.refit_every none
      --e3.controller e3 --e3.anneal_final_ratio 0.9
      --e3.min_temperature 0.1 --e3.max_temperature 10.0
    )
    ;;
  recommended)
    args+=(
      --e3.allocator knapsack --e3.value mixed
      --e3.min_per_prompt 2 --e3.max_per_prompt 32
      --e3.refit_prior grid --e3.refit_every 25
      --e3.controller pi --e3.warmup_steps 5
      --e3.min_temperature 0.5 --e3.max_temperature 1.5
    )
    ;;
  *)
    echo "unknown recipe $recipe (paper or recommended)" >&2
    exit 2
    ;;
esac
args+=("$@")

if [[ "${E3_PRINT_ARGS:-0}" == 1 ]]; then
  printf '%s\n' "${args[@]}"
  exit 0
fi
exec python -m e3core.adapters.openrlhf "${args[@]}"
