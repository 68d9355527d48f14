"""The `migrate` command in-process: a SQLite config is migrated as start-up would and says so,
a PostgreSQL one that cannot be reached is one line without its password, and a malformed
`--from`/`--to` is refused with one line and exit status 2, touching nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.ledger.sqlite import MIGRATIONS


def migrate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["migrate", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_a_sqlite_database_is_migrated_as_start_up_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f"[database]\nurl = 'sqlite:///{tmp_path}/team.db'\n")
    assert migrate(capsys, "--config", str(config)) == (
        0,
        f"{tmp_path}/team.db: SQLite schema migrated from version 0 to {len(MIGRATIONS)}\n",
        "",
    )
    assert (tmp_path / "team.db").is_file()
    assert migrate(capsys, "--config", str(config))[1] == (
        f"{tmp_path}/team.db: the SQLite schema is at version {len(MIGRATIONS)} already; "
        "nothing to do\n"
    )


def test_an_unreachable_postgresql_is_one_line_without_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[database]\nurl = 'postgresql://ops:hunter2@127.0.0.1:1/gateway'\n")
    status, out, err = migrate(capsys, "--config", str(config))
    assert (status, out, err.count("\n")) == (1, "", 1)
    assert err.startswith(
        "nanogpt-gateway migrate: postgresql://ops:***@127.0.0.1:1/gateway: cannot connect: "
    )
    assert "hunter2" not in err


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--from", "old.db"], "--to: expected a postgresql:// URL (or a config whose"),
        (["--to", "postgresql://h/db"], "nanogpt-gateway migrate: --to needs --from"),
        (
            ["--from", "postgresql://u:pw@h/a", "--to", "postgresql://h/b"],
            "--from: expected sqlite:///path or a file's path, got 'postgresql://u:***@h/a'",
        ),
        (
            ["--from", "old.db", "--to", "sqlite:///new.db"],
            "--to: expected a postgresql:// URL (or a config whose [database] url is one), "
            "got 'sqlite:///new.db'",
        ),
        (
            ["--from", "sqlite:///missing.db", "--to", "postgresql://h/b"],
            "nanogpt-gateway migrate: --from: missing.db: no database here",
        ),
    ],
)
def test_a_malformed_copy_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], said: str
) -> None:
    (tmp_path / "old.db").write_bytes(b"")
    status, out, err = migrate(capsys, *args)
    assert (status, out, err.count("\n")) == (2, "", 1) and said in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.db"]
