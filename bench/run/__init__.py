"""The run layer: grid planning, one run (runner), executors, submitit jobs, saved models, grid status, re-checks."""
