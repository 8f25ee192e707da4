"""Serving trained models: predictions and backtests on a window of the data directory or on
bars sent along, for the HTTP API (services/backend/controllers/predictions.py) and as the NATS
request/reply service `trainbus-predictor` (`trainbus predictor`).

- `messages`: the requests and replies (msgspec Structs; OpenAPI and docs/schemas/predictor.*);
- `models`: which model a reference names, loaded off the event loop, cached (LRU), fetched
  from the object store and digest-checked when this machine's disk lacks it;
- `predictions`: `PredictionService`, a request in and a reply out, refusals naming the field;
- `errors`: the refusals and their codes;
- `service`: the `nats.micro` service (`<prefix>.svc.predict`, `<prefix>.svc.backtest`);
- `runner`: the process (connect, serve until stopped, drain).
"""
