"""The TensorRT side of the runtime, behind the backend interface of :mod:`..backends.base`.

In the style of Polygraphy's ``backend/trt/``: small build steps that each return what they
make, a runner that only runs, and the backend that refits.

* :mod:`.loader`       - build steps: parse base.onnx (strongly typed where TensorRT offers it),
  precision flags otherwise, refit, profile, build;
* :mod:`.runner`       - one deserialized engine: context, I/O buffers, ``infer``;
* :mod:`.backend`      - :class:`~.backend.TrtBackend`: the engine(s) plus the refit per switch;
* :mod:`.weight_forms` - how the refittable weights look inside an engine (int8, qdq-float, fp16);
* :mod:`.refit_map`    - which engine weights a switch writes, and as what;
* :mod:`.delta_apply`  - the CUDA delta kernel launched through pycuda (device delta apply);
* :mod:`.engine_store` - engines saved in a bundle: pick the one for this device, add one;
* :mod:`.emulate`      - a refit replayed in ONNX Runtime on the CPU (doctor and tests);
* :mod:`.qdq_rules`    - TensorRT's explicit-quantization rules, checked on base.onnx;
* :mod:`.cli`          - ``edgetool engine build`` / ``engine onnx``, run on the device.

Nothing here imports TensorRT or pycuda at module level.
"""
