"""CIDer (arXiv 2506.10452) re-implemented for mer_bench."""
