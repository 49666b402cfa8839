"""The DP state space: per-block parts, endings, candidate stages and their canonical keys (pure)."""
