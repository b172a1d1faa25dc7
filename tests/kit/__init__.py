"""VoxCanvas's development kit: what both the tests and the benchmarks build on.

Installed as the package ``devkit`` (see ``[tool.setuptools.package-dir]`` in pyproject.toml) so
that ``bench/`` imports public names from it without reaching into ``tests/``:

- ``devkit.builders``  tiny random-weight models (SD, CLIP, Whisper) saved with ``save_pretrained``,
  and the CTranslate2 → transformers converter for the real Whisper tiny.en;
- ``devkit.voice``     voice notes like Discord's (espeak-ng + ffmpeg → OGG/Opus);
- ``devkit.gemini``    a fake Gemini server for the real google-genai client;
- ``devkit.discord``   a fake Discord (REST + gateway + CDN) for the real discord.py client, a package
  split by concern (world, http, gateway, messages, interactions, commands, cdn, app);
- ``devkit.helpers``   reading what the VoxCanvas bot posted (job footers, button custom ids).

Why here: the top level is fixed, the kit is test infrastructure that lives with the tests, and an
installed name (in the ``test`` extra's editable or regular install) lets ``bench/`` use it from any
working directory. Only ``devkit.gemini`` imports product code (its retry policy and settings).
"""
