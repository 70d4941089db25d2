"""Baseline models (MulT, Self-MM) as mer_bench adapters."""
