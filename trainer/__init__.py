"""jicd's training system: config root, three-branch loop, losses, optimizer, DeepSpeed/DDP
engine, checkpoints, validation and the metrics logger. Builds on :mod:`jicd` (models, noise,
distributed) and :mod:`data_pipeline` (loaders)."""
