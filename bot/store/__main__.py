"""``python -m bot.store backup DEST`` (online backup, safe while running) | ``python -m bot.store check``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .backup import backup_database, check_database
from .errors import StoreError
from .files import DB_NAME, JOBS_DIR
from .schema import SCHEMA_VERSION


def main(argv: list[str] | None = None) -> int:
    """Run the command; 0 on success, 1 when the check finds problems, 2 on an error."""
    parser = argparse.ArgumentParser(prog="python -m bot.store", description="The VoxCanvas job store's database.")
    parser.add_argument("--data-dir", type=Path, help="defaults to the DATA_DIR setting")
    sub = parser.add_subparsers(dest="command", required=True)
    backup_cmd = sub.add_parser("backup", help="online backup of voxcanvas.db (safe while running)")
    backup_cmd.add_argument("dest", type=Path)
    sub.add_parser("check", help="integrity check and schema version of voxcanvas.db")
    args = parser.parse_args(argv)

    data_dir: Path | None = args.data_dir
    if data_dir is None:
        from pipeline.settings import get_settings

        data_dir = Path(get_settings().DATA_DIR)
    db_path = data_dir / DB_NAME
    try:
        if args.command == "backup":
            dest = backup_database(db_path, args.dest)
            print(f"backed up {db_path} to {dest}; now copy {data_dir / JOBS_DIR}/ too")
            return 0
        check = check_database(db_path)
    except StoreError as exc:
        print(f"error: {exc}")
        return 2
    print(
        f"{db_path}: schema v{check.schema_version} (this VoxCanvas: v{SCHEMA_VERSION}), {check.jobs} job(s), "
        f"integrity: {'; '.join(check.integrity[:5])}"
    )
    return 0 if check.ok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
