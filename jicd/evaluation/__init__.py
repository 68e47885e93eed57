"""Real-bitstream evaluation (:mod:`~jicd.evaluation.evaluate`) and RD report
(:mod:`~jicd.evaluation.report`) with the published reference points (``reference/*.json``)."""
