"""VoxCanvas benchmarks (issue #7): ``python -m bench --mode cpu|gpu`` / ``make bench``.

* ``bench.cpu``: tiny models on any machine — bot overhead, batching, event-loop lag.
* ``bench.gpu``: real-size architectures (SD 1.5, Whisper large-v3-turbo, CLIP ViT-L/14) with random
  weights on a CUDA GPU — seconds per image, images/s by batch size, Whisper, CLIP, the full loop, a
  32-job burst, and before/after comparisons of each speed option.
* ``bench.models``: builders of the real-size random-weight models (tiny ones come from
  ``tests/builders.py``), always loaded through the product's own loading code.
* ``bench.report``: machine info, the results JSON and the ``docs/benchmarks.md`` table.

Everything measured goes through the product (``Synthesizer``, ``Transcriber``, ``ClipCritic``,
``GPUExecutor``, ``Studio``, the bot), never a reimplementation.
"""
