"""``store.local_access``: whether a local sqlite store can be opened, from the file system.

The read-only cases (a 0555 directory, a read-only mount) run through real app processes
in tests/integration/test_first_hour.py; here the answers that need no special mount.
"""

import sqlite3

from synalinks_obs.store.local_access import sqlite_reason, sqlite_store_problem


def test_a_new_store_in_a_writable_place_is_fine(tmp_path):
    assert sqlite_reason(str(tmp_path / "mlflow.db")) is None
    # MLflow creates missing directories: the nearest existing one must be writable.
    assert sqlite_reason(str(tmp_path / "a" / "b" / "mlflow.db")) is None
    assert sqlite_store_problem("http://127.0.0.1:5000") is None
    assert sqlite_store_problem("postgresql://u@h/db") is None


def test_an_existing_database_is_fine_and_an_empty_file_too(tmp_path):
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as connection:
        connection.execute("create table t (x)")
    connection.close()
    assert sqlite_reason(str(db)) is None
    empty = tmp_path / "empty.db"
    empty.touch()  # what sqlite itself leaves before the first write
    assert sqlite_reason(str(empty)) is None


def test_what_cannot_be_a_store_is_said_in_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("not a database at all\n")
    assert sqlite_reason(str(tmp_path / "notes.txt")) == f"{tmp_path / 'notes.txt'} is not an SQLite database"
    (tmp_path / "adir").mkdir()
    assert sqlite_reason(str(tmp_path / "adir")) == f"{tmp_path / 'adir'} is a directory"
    assert sqlite_reason(str(tmp_path / "notes.txt" / "x.db")) == f"{tmp_path / 'notes.txt'} is not a directory"
    line = sqlite_store_problem(f"sqlite:///{tmp_path / 'notes.txt'}")
    assert line == (
        f"synalinks-obs: MLFLOW_TRACKING_URI=sqlite:///{tmp_path / 'notes.txt'} cannot be opened: "
        f"{tmp_path / 'notes.txt'} is not an SQLite database; tracing is off. Use a location this "
        "user can write (MLFLOW_TRACKING_URI=sqlite:///DIR/mlflow.db) or an MLflow server (http://host:5000)"
    )
