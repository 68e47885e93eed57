"""jicd: joint image compression and denoising (contrastive learning + multi-scale Self-ONNs).

The library: everything inference and evaluation need — models (:mod:`jicd.models`), entropy
coders and the ``.jicd`` format (:mod:`jicd.codec`), the noise model (:mod:`jicd.noise`),
metrics, evaluation and report (:mod:`jicd.evaluation`), the strict config machinery, the
rank/env module and the ``jicd`` command. It imports neither ``trainer`` nor ``data_pipeline``.
"""

__version__ = "0.1.0"
