"""Applying saved models: `bench predict` and `bench evaluate`."""
