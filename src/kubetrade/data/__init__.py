"""Data: sources, quality gate, features, feature store, splits and windows."""
