"""``bench.carry``: the wheels made or trimmed here for an offline GPU machine are valid wheels
(RECORD hashes match), the trim drops only what it names, and the check finds what nothing provides."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

from bench import carry


def _wheel(path: Path, name: str, version: str, files: dict[str, bytes], requires: tuple[str, ...] = ()) -> Path:
    info = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    with zipfile.ZipFile(path, "w") as wheel:
        for member, data in {**files, f"{info}/METADATA": meta.encode(), f"{info}/RECORD": b""}.items():
            wheel.writestr(member, data)
    return path


def _record_matches(path: Path) -> bool:
    with zipfile.ZipFile(path) as wheel:
        record = next(n for n in wheel.namelist() if n.endswith("/RECORD"))
        for row in wheel.read(record).decode().splitlines():
            member, digest, _ = row.rsplit(",", 2)
            if member == record:
                continue
            data = wheel.read(member)
            if digest != "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode():
                return False
        return len(wheel.read(record).decode().splitlines()) == len(wheel.namelist())


def test_devkit_wheel_holds_the_kit_with_a_valid_record(tmp_path: Path):
    wheel = carry.build_devkit(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert "devkit/builders.py" in names and "devkit/ray_head.py" in names
        assert z.read("devkit/builders.py") == (carry.ROOT / "tests" / "kit" / "builders.py").read_bytes()
    assert _record_matches(wheel)


def test_trim_ray_drops_only_the_named_parts(tmp_path: Path):
    source = _wheel(
        tmp_path / "ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl",
        "ray",
        "2.60.0",
        {
            "ray/__init__.py": b"",
            "ray/serve/api.py": b"serve",
            "ray/dashboard/agent.py": b"agent",
            "ray/jars/ray_dist.jar": b"java" * 100,
            "ray/dashboard/client/build/index.html": b"<html>",
            "ray/rllib/algo.py": b"rl",
            "ray/serve/tests/test_x.py": b"test",
        },
    )
    target = tmp_path / "out" / source.name
    target.parent.mkdir()
    kept, dropped = carry.trim_ray(source, target, strip=False)
    with zipfile.ZipFile(target) as z:
        names = set(z.namelist())
    assert {"ray/__init__.py", "ray/serve/api.py", "ray/dashboard/agent.py"} <= names
    assert not names & {"ray/jars/ray_dist.jar", "ray/dashboard/client/build/index.html", "ray/rllib/algo.py",
                        "ray/serve/tests/test_x.py"}  # fmt: skip
    assert (kept, dropped) == (4, 4)  # the three modules and METADATA (RECORD is written anew)
    assert _record_matches(target)


def test_check_reports_what_neither_the_wheels_nor_the_image_provide(tmp_path: Path, capsys):
    folder = tmp_path / "wheels"
    folder.mkdir()
    _wheel(folder / "a-1.0-py3-none-any.whl", "a", "1.0", {}, ("b>=2", "numpy>=2", "torch>=2.12", "py-spy"))
    _wheel(folder / "b-2.1-py3-none-any.whl", "b", "2.1", {}, ("c", 'winreg; sys_platform == "win32"'))
    image = tmp_path / "image.txt"
    image.write_text("numpy\ntorch==2.11.0\n")
    assert carry.check([folder], image) == 1
    out = capsys.readouterr().out
    assert "a==1.0 needs torch>=2.12; the image has torch==2.11.0" in out
    assert "b==2.1 needs c: neither carried nor in the image" in out
    assert "winreg" not in out and "py-spy" not in out.split("ranges")[0]  # other platforms; known-unneeded
    assert "numpy>=2 (for a)" in out  # a range on an image package of unknown version, for a human to judge
    image.write_text("numpy\ntorch==2.12.1\nc\n")
    assert carry.check([folder], image) == 0
