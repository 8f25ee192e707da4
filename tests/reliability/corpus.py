"""Hand-written hostile inputs: bad train commands and bad strategies, each with the field its
rejection must name (`field`, the command field) and, for strategies, the YAML path the reason
must mention (`mentions`).

Shared by tests/reliability/test_hostile.py (through a live worker and through the API) and
docs/reliability.md (the count).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from tests.harness.strategies import strategy_yaml
from tests.reliability.cluster import SYMBOLS

BASE: dict[str, Any] = {"strategy": "tiny", "symbols": list(SYMBOLS), "timeframes": ["1h"],
                        "seed": 1}


@dataclass(frozen=True)
class Bad:
    name: str
    body: bytes
    field: str | None  # what `rejected.field` (or the API's problem `field`) must be
    mentions: str | None = None  # a text the reason must contain (a YAML path, ...)
    api: bool = True  # also sent through the API (False: only meaningful on a subject)
    api_field: str | None = "same"  # what the API names, when it differs from `field`

    @property
    def expected_api_field(self) -> str | None:
        return self.field if self.api_field == "same" else self.api_field

    def api_body(self) -> bytes:
        """The same input as an HTTP body (the API has no job_id field: it names its own)."""
        try:
            data = json.loads(self.body)
        except ValueError:
            return self.body
        if isinstance(data, dict) and "job_id" in data and self.field != "job_id":
            data.pop("job_id")
        return json.dumps(data, allow_nan=True).encode()


def cmd(**changes: Any) -> bytes:
    body = dict(BASE)
    for key, value in changes.items():
        if value is _DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return json.dumps(body, allow_nan=True).encode()


_DROP = object()
TINY = yaml.safe_load(strategy_yaml("tiny", epochs=2))


def inline(text: str) -> bytes:
    return cmd(strategy=_DROP, strategy_yaml=text)


def patched(path: str, value: Any) -> bytes:
    """The tiny strategy with one value replaced (dotted path; `value` None deletes it)."""
    tree = json.loads(json.dumps(TINY))
    node = tree
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    if value is None:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return inline(yaml.safe_dump(tree))


def yaml_text_with(old: str, new: str) -> bytes:
    return inline(strategy_yaml("tiny", epochs=2).replace(old, new))


BILLION_LAUGHS = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
)
MANY_ALIASES = "x: &x 1\n" + "\n".join(f"k{i}: *x" for i in range(40))

CORPUS: list[Bad] = [
    # --- not a command at all -------------------------------------------------------------
    Bad("not JSON", b"{not json", None),
    Bad("empty body", b"", None),
    Bad("a JSON array", b"[1, 2, 3]", None),
    Bad("a JSON string", b'"train"', None),
    Bad("NaN literal", cmd().replace(b'"seed": 1', b'"seed": NaN'), None),
    Bad("Infinity literal", cmd().replace(b'"seed": 1', b'"seed": Infinity'), None),
    # --- wrong types, missing and unknown fields -----------------------------------------
    Bad("symbols a string", cmd(symbols="EURUSD"), "symbols"),
    Bad("symbols empty", cmd(symbols=[]), "symbols"),
    Bad("65 symbols", cmd(symbols=[f"S{i}" for i in range(65)]), "symbols"),
    Bad("symbol a number", cmd(symbols=[123]), "symbols[0]"),
    Bad("timeframe nonsense", cmd(timeframes=["7x"]), "timeframes[0]"),
    Bad("timeframes empty", cmd(timeframes=[]), "timeframes"),
    # (the API defaults symbols from the strategy: a valid request there)
    Bad("missing symbols", cmd(symbols=_DROP), "symbols", api=False),
    Bad("seed a word", cmd(seed="ten"), "seed"),
    Bad("negative seed", cmd(seed=-1), "seed"),
    Bad("huge seed", cmd(seed=2**64), "seed"),
    # (the API's JSON parser refuses the number before any field is known: a plain 400)
    Bad("5000-digit seed", cmd().replace(b'"seed": 1', b'"seed": ' + b"9" * 5000), "seed",
        api_field=None),
    Bad("float seed", cmd(seed=1e308), "seed"),
    Bad("unknown field epochs", cmd(epochs=-5), "epochs"),
    Bad("unknown field gpu", cmd(gpu=True), "gpu"),
    Bad("neither strategy nor yaml", cmd(strategy=_DROP), "strategy"),
    Bad("both strategy and yaml", cmd(strategy_yaml="name: x"), "strategy"),
    Bad("start not a date", cmd(start="yesterday"), "start"),
    Bad("start month 13", cmd(start="2024-13-45"), "start"),
    Bad("start after end", cmd(start="2024-06-01", end="2024-01-01"), "end"),
    Bad("pool contradicts the subject", cmd(pool="host"), "pool", api=False),
    Bad("unknown pool", cmd(pool="gpu"), "pool"),
    Bad("requested_by 10k chars", cmd(requested_by="x" * 10_000), "requested_by"),
    Bad("empty idempotency key", cmd(idempotency_key=""), "idempotency_key"),
    Bad("300 KB command", cmd(strategy=_DROP, strategy_yaml="#" * 300_000), None,
        mentions="bytes"),
    # --- subject-token injection in job ids ------------------------------------------------
    Bad("job id with a dot", cmd(job_id="a.b"), "job_id"),
    Bad("job id a wildcard >", cmd(job_id="x.>"), "job_id"),
    Bad("job id a wildcard *", cmd(job_id="*"), "job_id"),
    Bad("job id with a space", cmd(job_id="a b"), "job_id"),
    Bad("reserved job id", cmd(job_id="job-42"), "job_id"),
    Bad("200-char job id", cmd(job_id="j" * 200), "job_id"),
    Bad("unicode job id", cmd(job_id="jöb"), "job_id"),
    Bad("job id a number", cmd(job_id=42), "job_id"),
    Bad("job id traversal", cmd(job_id="../../etc"), "job_id"),
    # --- path traversal in names -------------------------------------------------------------
    Bad("strategy traversal", cmd(strategy="../../etc/passwd"), "strategy"),
    Bad("strategy absolute", cmd(strategy="/etc/passwd"), "strategy"),
    Bad("strategy dots", cmd(strategy="a..b"), "strategy"),
    Bad("strategy unknown", cmd(strategy="does_not_exist"), "strategy"),
    Bad("symbol traversal", cmd(symbols=["../../../etc/passwd"]), "symbols[0]"),
    Bad("symbol traversal inside", cmd(symbols=["a/../../srv/strategies/tiny"]), "symbols"),
    Bad("symbol without data", cmd(symbols=["NOPE"]), "symbols"),
    Bad("strategy name traversal (model dir)", patched("name", "../../evil"), "strategy_yaml",
        mentions="name"),
    Bad("strategy name with a slash", patched("name", "a/b"), "strategy_yaml", mentions="name"),
    # --- strategies: malformed YAML, bombs, anchors --------------------------------------------
    Bad("malformed YAML", inline("{"), "strategy_yaml", mentions="YAML"),
    Bad("YAML not a mapping", inline("- a\n- b"), "strategy_yaml", mentions="mapping"),
    Bad("billion laughs", inline(BILLION_LAUGHS), "strategy_yaml", mentions="alias"),
    Bad("40 aliases", inline(MANY_ALIASES), "strategy_yaml", mentions="aliases"),
    Bad("recursive anchor", inline("a: &a [*a]"), "strategy_yaml"),
    Bad("python object tag", inline("!!python/object/apply:os.system ['touch /tmp/pwned']"),
        "strategy_yaml"),
    Bad("duplicate keys", yaml_text_with("name: tiny", "name: tiny\nname: twice"),
        "strategy_yaml", mentions="name"),
    Bad("5000-digit number", yaml_text_with("seed: 11", "seed: " + "9" * 5000),
        "strategy_yaml", mentions="cannot be read"),
    # --- strategies: unknown things, wrong types, huge and negative numbers, NaN/inf -------
    Bad("unknown indicator", patched("indicators.rsi_14.type", "magic"), "strategy_yaml",
        mentions="indicators.rsi_14"),
    Bad("fuzzy set on a missing indicator", patched("fuzzy_sets.rsi_zone.indicator", "nope_1"),
        "strategy_yaml", mentions="fuzzy_sets.rsi_zone"),
    Bad("unknown section", patched("risk_engine", {"x": 1}), "strategy_yaml",
        mentions="risk_engine"),
    Bad("model transformer", patched("model.type", "transformer"), "strategy_yaml",
        mentions="model.type"),
    Bad("negative epochs", patched("training.epochs", -3), "strategy_yaml",
        mentions="training.epochs"),
    Bad("epochs a word", patched("training.epochs", "ten"), "strategy_yaml",
        mentions="training.epochs"),
    Bad("a trillion epochs", patched("training.epochs", 10**12), "strategy_yaml",
        mentions="training.epochs"),
    Bad("zero batch size", patched("training.batch_size", 0), "strategy_yaml",
        mentions="training.batch_size"),
    Bad("NaN learning rate", yaml_text_with("learning_rate: 0.005", "learning_rate: .nan"),
        "strategy_yaml", mentions="training.learning_rate"),
    Bad("inf learning rate", yaml_text_with("learning_rate: 0.005", "learning_rate: .inf"),
        "strategy_yaml", mentions="training.learning_rate"),
    Bad("negative dropout", patched("model.architecture.dropout", -0.5), "strategy_yaml",
        mentions="model.architecture.dropout"),
    Bad("17 GB hidden layers", patched("model.architecture.hidden_layers", [65536, 65536]),
        "strategy_yaml", mentions="model.architecture.hidden_layers"),
    Bad("huge indicator period", yaml_text_with("period: 14", "period: " + "7" * 500),
        "strategy_yaml", mentions="indicators.rsi_14"),
    Bad("negative indicator period", yaml_text_with("period: 14", "period: -14"),
        "strategy_yaml", mentions="indicators.rsi_14"),
    Bad("NaN membership", yaml_text_with("[0, 25, 45]", "[.nan, 25, 45]"), "strategy_yaml",
        mentions="fuzzy_sets.rsi_zone"),
    Bad("split over 1", patched("training.data_split", {"train": 0.9, "validation": 0.9,
                                                        "test": 0.9}),
        "strategy_yaml", mentions="training.data_split"),
    Bad("zigzag threshold 5", patched("training.labels.zigzag_threshold", 5), "strategy_yaml",
        mentions="training.labels"),
    # --- named strategies that are bad files in the strategies dir ---------------------------
    Bad("named strategy: a YAML bomb", cmd(strategy="bomb"), "strategy", mentions="alias"),
    Bad("named strategy: malformed", cmd(strategy="broken"), "strategy", mentions="YAML"),
    Bad("named strategy: name mismatch traversal", cmd(strategy="evilname"), "strategy",
        mentions="name"),
]

# Files the named-strategy entries refer to (written into the strategies dir by the test).
BAD_STRATEGY_FILES = {
    "bomb.yaml": BILLION_LAUGHS,
    "broken.yaml": "name: broken\nindicators: {rsi: [\n",
    "evilname.yaml": strategy_yaml("tiny", epochs=2).replace("name: tiny", "name: ../../x"),
}
