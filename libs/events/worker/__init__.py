"""The shared worker runtime: what both trainers are, minus the work itself.

- `runtime`: `WorkerRuntime` and `WorkerSettings`: pull from the pool consumers, leases,
  heartbeats, capacity, drain (named startup / serve / shutdown phases).
- `attempt`: one delivery of one train command, from decode to ack (`JobAttempt`).
- `relay`: the runner's reports (progress, epochs, checkpoints) published in order, fenced.
- `port`: the narrow port to the work (`JobRunner`), implemented with the training pipeline by
  `services/trainers/pipeline_runner.py` and by fakes in the runtime tests.
"""
