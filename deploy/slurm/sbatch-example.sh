#!/bin/bash
# A 2-node x 8-GPU job with prepwatch: one agent per node, discovered by Prometheus through
# the shared file_sd folder (deploy/slurm/prometheus.yml). See docs/deploy.md, "Slurm".
#SBATCH --job-name=resnet50
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
set -euo pipefail

# --srun-args: where cgroups hide GPUs from steps that did not ask for them, let the agent
# step see them (it shares them with the job's step: --overlap).
prepwatch slurm run --host 0.0.0.0 --sd-dir /shared/prometheus/file_sd/prepwatch \
    --srun-args "--gres=gpu:8" -- \
    srun python train.py
