"""jicd: joint image compression and denoising (contrastive learning + multi-scale Self-ONNs)."""

__version__ = "0.1.0"
