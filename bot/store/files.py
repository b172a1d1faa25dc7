"""The store's files under ``DATA_DIR``: atomic fsynced writes, reads, removal and the process lock.

Everything under ``DATA_DIR`` is private to the VoxCanvas user: the database holds interaction
tokens (15-minute credentials) and the job directories hold people's voice notes. Files are created
:data:`FILE_MODE` (0600) and directories :data:`DIR_MODE` (0700), whatever the umask; opening the
store tightens what an older version left readable.

The functions block; :class:`JobFiles` runs them in a thread for the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import secrets
import shutil
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .errors import JobNotFound, StoreError
from .records import is_job_id

if sys.platform != "win32":  # POSIX only; elsewhere the single-process rule is not enforced
    import fcntl

log = logging.getLogger(__name__)

DB_NAME: Final = "voxcanvas.db"
LOCK_NAME: Final = "voxcanvas.lock"
JOBS_DIR: Final = "jobs"

IMAGE_FILE: Final = "image.png"
PALETTE_FILE: Final = "palette.png"
INIT_IMAGE_FILE: Final = "init.png"
RESULT_MARKER: Final = "result.json"  # written last by complete(): the picture files are whole
RESULT_FILES: Final = (IMAGE_FILE, PALETTE_FILE, RESULT_MARKER)
GRID_FILE: Final = "grid.png"  # a job's candidates as one labelled picture (several candidates only)


def candidate_file(index: int) -> str:
    """The file of candidate ``index`` (0-based) of a job with several candidates."""
    return f"candidate-{int(index) + 1}.png"


CONTROL_FILE: Final = "control.png"  # the ControlNet control image a picture was rendered with (#18)
#: The user's ControlNet source image (canny/depth/pose), a job *input* saved with the job like
#: ``init.png`` so a restart or a Regenerate renders with it again; :data:`CONTROL_FILE` is the
#: control image computed from it (the edge/depth map), a *result*.
CONTROL_INPUT_FILE: Final = "control-input.png"
CANDIDATE_FILES: Final = tuple(candidate_file(i) for i in range(4)) + (GRID_FILE, CONTROL_FILE)
MUSIC_FILE: Final = "music.ogg"  # a composed piece as Discord plays it (OGG/Opus)
MUSIC_WAV_FILE: Final = "music.wav"  # the same piece as 16-bit PCM WAV, lossless (the HTTP API's file)
MUSIC_RESULT_FILES: Final = (MUSIC_FILE, MUSIC_WAV_FILE, RESULT_MARKER)
_AUDIO_EXT = re.compile(r"[a-z0-9]{1,8}")
FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700
#: The database and SQLite's companions (which SQLite creates with the database file's mode).
DB_FILES: Final = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal")


@dataclass(frozen=True)
class JobInputs:
    """A new job's input files (``audio.<ext>``, ``init.png``, ``control-input.png``), saved before its row."""

    audio_file: str | None
    init_image_file: str | None
    files: tuple[tuple[str, bytes], ...]
    control_image_file: str | None = None

    @classmethod
    def of(
        cls, audio: bytes | None, audio_ext: str, init_image: bytes | None, control_image: bytes | None = None
    ) -> JobInputs:
        """Name the inputs; ``ValueError`` for an audio extension that can't be a file name's."""
        ext = audio_ext.lower().lstrip(".")
        if audio is not None and not _AUDIO_EXT.fullmatch(ext):
            raise ValueError(f"audio_ext must be a short alphanumeric extension, not {audio_ext!r}")
        audio_file = f"audio.{ext}" if audio is not None else None
        init_file = INIT_IMAGE_FILE if init_image is not None else None
        control_file = CONTROL_INPUT_FILE if control_image is not None else None
        named = ((audio_file, audio), (init_file, init_image), (control_file, control_image))
        files = tuple((name, data) for name, data in named if name and data is not None)
        return cls(audio_file, init_file, files, control_file)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def temp_name(path: Path) -> Path:
    """A hidden sibling of ``path`` to write before ``os.replace`` puts it in place."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def atomic_write(path: Path, data: bytes, *, durable: bool) -> None:
    """``path`` holds either its old content or all of ``data``, never a part."""
    tmp = temp_name(path)
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_files(directory: Path, files: Iterable[tuple[str, bytes]], *, durable: bool, new_dir: bool = False) -> None:
    """Write ``files`` atomically into ``directory`` (created; must not exist if ``new_dir``)."""
    created = not directory.exists()
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=not new_dir)
    for name, data in files:
        atomic_write(directory / name, data, durable=durable)
    if durable:
        fsync_dir(directory)
        if created:
            fsync_dir(directory.parent)


def write_result_files(
    directory: Path,
    image_png: bytes,
    palette_png: bytes,
    marker: bytes,
    *,
    durable: bool,
    extra: Sequence[tuple[str, bytes]] = (),
) -> None:
    """The picture, palette (and ``extra``: candidates, grid) first, then :data:`RESULT_MARKER`:
    its presence means they are all whole."""
    write_files(directory, [(IMAGE_FILE, image_png), (PALETTE_FILE, palette_png), *extra], durable=durable)
    write_files(directory, [(RESULT_MARKER, marker)], durable=durable)


def write_music_files(
    directory: Path, music_ogg: bytes, marker: bytes, *, durable: bool, music_wav: bytes | None = None
) -> None:
    """The piece (and its WAV, if given) first, then :data:`RESULT_MARKER`: its presence means
    the piece is whole."""
    files = [(MUSIC_FILE, music_ogg)] + ([(MUSIC_WAV_FILE, music_wav)] if music_wav is not None else [])
    write_files(directory, files, durable=durable)
    write_files(directory, [(RESULT_MARKER, marker)], durable=durable)


def read_file(path: Path) -> bytes:
    return path.read_bytes()


def unlink_all(directory: Path, names: Iterable[str]) -> None:
    for name in names:
        with contextlib.suppress(OSError):
            (directory / name).unlink()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def find_result_markers(jobs_dir: Path, job_ids: Iterable[str]) -> list[tuple[str, bytes]]:
    """``(job id, marker bytes)`` for each job whose result files were all saved.

    A marker without its picture files (it can't happen through :func:`write_result_files`, but a
    hand-edited directory can) is removed so the job simply runs again.
    """
    found = []
    for job_id in job_ids:
        directory = jobs_dir / job_id
        marker = directory / RESULT_MARKER
        if marker.is_file():
            picture = (directory / IMAGE_FILE).is_file() and (directory / PALETTE_FILE).is_file()
            if picture or (directory / MUSIC_FILE).is_file():
                found.append((job_id, marker.read_bytes()))
            else:
                with contextlib.suppress(OSError):
                    marker.unlink()
    return found


def remove_job_dirs(jobs_dir: Path, removed: Iterable[str], known: set[str], cutoff: float) -> None:
    """Remove the directories of ``removed`` jobs, and those with no row older than ``cutoff``."""
    for job_id in removed:
        remove_tree(jobs_dir / job_id)
    with contextlib.suppress(OSError):
        for entry in os.scandir(jobs_dir):
            if entry.is_dir(follow_symlinks=False) and entry.name not in known:
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        remove_tree(Path(entry.path))


# --- DATA_DIR and its lock -----------------------------------------------------------------------
def prepare_data_dir(data_dir: Path) -> int | None:
    """Create and probe ``data_dir``, then take its lock: one VoxCanvas process per DATA_DIR.

    Returns the lock's file descriptor (``None`` where ``fcntl`` is missing); give it back with
    :func:`release_lock`.
    """
    try:
        data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        (data_dir / JOBS_DIR).mkdir(mode=DIR_MODE, exist_ok=True)
        make_private(data_dir)
        probe = data_dir / f".write-probe-{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StoreError(
            f"DATA_DIR {data_dir} can't be used ({exc.strerror or exc}). Point DATA_DIR at a "
            "directory the VoxCanvas user can create and write to."
        ) from exc
    if sys.platform == "win32":  # pragma: no cover
        return None
    lock_path = data_dir / LOCK_NAME
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise StoreError(
            f"Another VoxCanvas process is already using DATA_DIR {data_dir} (it holds "
            f"{lock_path}). Stop it first, or give this one its own DATA_DIR."
        ) from exc
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def make_private(data_dir: Path) -> None:
    """``DATA_DIR`` and its ``jobs/`` at most 0700, the database and its companions at most 0600.

    The database is created empty (SQLite opens an empty file as a new database) so that it never
    exists with looser permissions, even for a moment; what an older version left readable is
    tightened. A directory we don't own keeps its mode (logged)."""
    with contextlib.suppress(FileExistsError):  # whatever is there is the database's open to judge
        os.close(os.open(data_dir / DB_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    for directory in (data_dir, data_dir / JOBS_DIR):
        try:
            _restrict(directory, DIR_MODE)
        except PermissionError:
            log.warning("DATA_DIR: can't make %s private (not its owner); it keeps its permissions", directory)
    for name in DB_FILES:
        if (data_dir / name).is_file():
            _restrict(data_dir / name, FILE_MODE)


def _restrict(path: Path, allowed: int) -> None:
    """Take away every permission bit of ``path`` outside ``allowed`` (never add one: a
    read-only DATA_DIR stays read-only)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & ~allowed:
        os.chmod(path, mode & allowed)


def release_lock(fd: int | None) -> None:
    if fd is None:
        return
    with contextlib.suppress(OSError):
        if sys.platform != "win32":
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# --- the job directories, for the event loop ----------------------------------------------------
class JobFiles:
    """``DATA_DIR/jobs/<job id>/``: the blocking helpers above, run in a thread, errors made ours."""

    def __init__(self, jobs_dir: Path, *, durable: bool) -> None:
        self.jobs_dir = jobs_dir
        self.durable = durable

    def job_dir(self, job_id: str) -> Path:
        """The job's directory (the id is checked: it comes from user-visible custom ids)."""
        if not is_job_id(job_id):
            raise JobNotFound()
        return self.jobs_dir / job_id

    async def save_inputs(self, job_id: str, inputs: JobInputs) -> None:
        """Write a new job's audio / init image into its new directory."""
        try:
            await asyncio.to_thread(write_files, self.job_dir(job_id), inputs.files, durable=self.durable, new_dir=True)
        except FileExistsError:
            raise ValueError(f"job id {job_id!r} is already taken") from None
        except OSError as exc:
            log.error("job %s: can't save its input files: %s", job_id, exc)
            raise StoreError() from exc

    async def save_result(
        self,
        job_id: str,
        image_png: bytes,
        palette_png: bytes,
        marker: bytes,
        extra: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """See :func:`write_result_files`."""
        try:
            await asyncio.to_thread(
                functools.partial(write_result_files, durable=self.durable, extra=tuple(extra)),
                self.job_dir(job_id),
                image_png,
                palette_png,
                marker,
            )
        except OSError as exc:
            log.error("job %s: can't save its picture: %s", job_id, exc)
            raise StoreError() from exc

    async def save_music(self, job_id: str, music_ogg: bytes, marker: bytes, music_wav: bytes | None = None) -> None:
        """See :func:`write_music_files`."""
        try:
            await asyncio.to_thread(
                write_music_files, self.job_dir(job_id), music_ogg, marker, durable=self.durable, music_wav=music_wav
            )
        except OSError as exc:
            log.error("job %s: can't save its music: %s", job_id, exc)
            raise StoreError() from exc

    async def read(self, job_id: str, name: str) -> bytes:
        directory = self.job_dir(job_id)
        try:
            return await asyncio.to_thread(read_file, directory / name)
        except FileNotFoundError:
            log.error("job %s: %s is missing from %s", job_id, name, directory)
            raise JobNotFound("The files for that picture are missing — please make it again.") from None

    async def unlink(self, job_id: str, names: Iterable[str]) -> None:
        await asyncio.to_thread(unlink_all, self.job_dir(job_id), tuple(names))

    async def remove(self, job_id: str) -> None:
        await asyncio.to_thread(remove_tree, self.job_dir(job_id))

    async def remove_dirs(self, removed: list[str], known: set[str], cutoff: float) -> None:
        """See :func:`remove_job_dirs`."""
        await asyncio.to_thread(remove_job_dirs, self.jobs_dir, removed, known, cutoff)

    async def result_markers(self, job_ids: list[str]) -> list[tuple[str, bytes]]:
        """See :func:`find_result_markers`."""
        return await asyncio.to_thread(find_result_markers, self.jobs_dir, job_ids)
