"""Evaluation: benchmarks (attention kernels, top-k layout builds), perplexity, information loss, significance tests."""
