"""What the test folders share (one definition each):

- `nats_server`: a real nats-server process; `fixtures`: the pytest fixtures of every folder
  (servers, prefixes, the API tests' workspace, bus config and stack);
- `bus`: `bus_config` / `trainer_bus_config` for a test server, `open_bus`;
- `strategies`: the tiny strategy (`strategy_yaml`), variants of the shipped example;
  `workspace`: synthetic data plus a strategies directory;
- `polling`: `eventually`, `wait_until`, `wait_status`, `wait_job_state`, and `Started`
  (a `ready=` callback to wait on instead of polling);
- `trainers`: a trainer served in the test's loop (`serving`), `one_torch_thread`;
- `api`: the real backend app (+ a container trainer) in the test's loop, SSE parsing;
- `processes`: the `trainbus` console script and a clean environment for it;
- `tls`: a throwaway CA and server certificate.
"""
