"""configure_logging, the one logging set-up of the three entry points: run in a fresh
interpreter, since it replaces the root logger's handlers (pytest's own included)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    # A user's own TRANSFORMERS_VERBOSITY / DIFFUSERS_VERBOSITY wins over ours: none here.
    env = {name: value for name, value in os.environ.items() if not name.endswith("_VERBOSITY")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_our_lines_reach_stderr_and_chatty_libraries_stay_quiet_even_when_imported_later():
    done = run_python(
        """
        import logging
        from pipeline.logs import configure_logging

        configure_logging("info", fmt="%(levelname)s %(name)s: %(message)s")
        import transformers  # imported after: it sets its own level from TRANSFORMERS_VERBOSITY

        logging.getLogger("pipeline.studio").info("job started")
        logging.getLogger("httpx").info("HTTP Request: POST https://example.invalid")
        transformers.utils.logging.get_logger("transformers.generation").warning("max_length advice")
        logging.getLogger("transformers.generation").error("a real failure")
        """
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert "INFO pipeline.studio: job started" in lines
    assert "a real failure" in done.stderr
    assert "HTTP Request" not in done.stderr and "max_length advice" not in done.stderr


def test_verbose_keeps_every_library_line_and_filters_apply():
    done = run_python(
        """
        import logging
        from pipeline.logs import configure_logging

        class Redact(logging.Filter):
            def filter(self, record):
                record.msg = record.getMessage().replace("s3cr3t-token", "[redacted]")
                record.args = ()
                return True

        configure_logging(logging.DEBUG, quiet_libraries=False, filters=[Redact()], levels={"numba": logging.ERROR})
        logging.getLogger("httpx").debug("HTTP Request with s3cr3t-token")
        logging.getLogger("numba").warning("compiling")
        """
    )
    assert done.returncode == 0, done.stderr
    assert "HTTP Request with [redacted]" in done.stderr and "s3cr3t-token" not in done.stderr
    assert "compiling" not in done.stderr
