"""LNLN (Zhang, Wang & Yu, NeurIPS 2024) as a mer_bench baseline: model and adapter."""
