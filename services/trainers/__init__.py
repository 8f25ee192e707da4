"""The trainers' process edge and the pipeline behind the worker port.

- `pipeline_runner`: `PipelineRunner`, the worker port (`libs/events/worker/port.py`)
  implemented with the training pipeline.
- `process`: the process edge both trainers share: options, signals, connect, serve, exit.
- `options`: their command-line options (argparse only: `trainbus --help` stays instant).
- `container`: the container trainer (pool `container`, then `any`); the host trainer is
  `services/host_trainer/`.
"""
