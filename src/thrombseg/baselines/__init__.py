"""Baselines trained and evaluated inside the same workflow as UpAttLLSTM (same patients, splits, metrics)."""
