"""VoxCanvas benchmarks (issue #7): ``python -m bench --mode cpu|gpu`` / ``make bench``.

* ``bench.cpu``: tiny models on any machine — bot overhead, batching, event-loop lag (one module
  each, plus ``harness``: the fake Discord and the bot; ``summary``: metrics, tables, notes).
* ``bench.gpu``: real-size architectures (SD 1.5, Whisper large-v3-turbo, CLIP ViT-L/14) with random
  weights on a CUDA GPU — seconds per image, images/s by batch size, Whisper, CLIP, the full loop, a
  32-job burst, and before/after comparisons of each speed option (one module per ``--only``
  section, plus ``harness``: the plan, timing helpers and the ``GpuBench`` they run on).
* ``bench.models``: builders of the real-size random-weight models (tiny ones come from
  ``devkit.builders``, the shared test/bench kit in ``tests/kit``), always loaded through the
  product's own loading code.
* ``bench.common``: what both modes share (the product's setting defaults, batch-size histograms)
  and the preamble of ``bench.upscale`` / ``bench.candidates`` (arguments, model directories, result path).
* ``bench.report``: machine info, the results JSON and the ``docs/benchmarks.md`` table.

Everything measured goes through the product (``Synthesizer``, ``Transcriber``, ``ClipCritic``,
``GPUExecutor``, ``Studio``, the bot), never a reimplementation. Imports come from ``pipeline``,
``bot``, ``cogs`` and ``devkit`` only, never from ``tests``.
"""
