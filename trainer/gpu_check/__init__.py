"""The GPU acceptance check (``make gpu-check``, ``python -m trainer.gpu_check``)."""
