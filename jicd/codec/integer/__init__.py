"""The integer entropy path: fixed-point entropy parameters, identical on every device.

The float path (:mod:`jicd.codec.wavefront`) must compute the CDF indices on a CPU, on one
thread, and still depends on the CPU's instruction set and the torch build. Here ``h_s``, the
masked context convolution and the entropy-parameter head run in fixed point (int16 weights and
activations, exact accumulation, rounding shifts, integer LeakyReLU, threshold comparison for
the scale → index step), so CPUs of any instruction set and GPUs derive the same indices
(Ballé, Johnston, Minnen, "Integer networks for data compression with latent-variable models",
ICLR 2019). Modules:

- ``fixed_point``  number formats, exact matmul, rescale; the exactness argument;
- ``layers``       one integer convolution / linear layer (+ activation, pixel shuffle);
- ``network``      the integer entropy model and its export payload;
- ``stages``       reading a float ``nn.Sequential`` as convertible stages;
- ``calibration``  value ranges on calibration images (a folder or generated images);
- ``convert``      float model → integer model (``jicd integerize``);
- ``coder``        the wavefront coder's integer path (z and y streams);
- ``export``       integerized exports: write, attach on load;
- ``cli``          ``jicd integerize``;
- ``isa_check``    encode under one CPU setting / device, decode under others (tests, benchmarks).
"""
