#!/bin/bash
# Slurm epilog fragment: a node killed hard cannot remove its prepwatch target file, so the
# epilog does. Prometheus forgets the target when the file goes.
rm -f "/shared/prometheus/file_sd/prepwatch/prepwatch-${SLURM_JOB_ID}-"*.json
