"""The training pipeline: pure, synchronous steps (no NATS, no asyncio).

Data half: config (strategy YAML -> StrategyConfig), data (OHLCV files, sample data), indicators
(TA-Lib registry), fuzzy (memberships), features (ordered matrix, multi-timeframe alignment),
labels (zigzag, triple barrier, forward return), dataset (alignment, split, multi-symbol).
Import the submodules directly; this package imports nothing so that `import libs.pipeline.strategy`
stays light (no pandas, TA-Lib or torch until a step needs them).
"""
