"""Write a file so that a reader sees the old one or the new one whole, never a mix or a half-written one.

The handbook (report.html) and its data (report.json) are rewritten by every
run; two sessions writing the same path, or a run killed while it writes,
must not leave a truncated page. The text goes to a temporary file in the same
folder (so the rename stays on one file system, where POSIX makes it atomic)
and is renamed over the old file.
"""

import os
import secrets
from pathlib import Path


def write_atomically(path, text: str) -> Path:
    path = Path(path)
    # Opened like any new file (not mkstemp's 0600), so the page keeps the permissions the user's umask gives.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def report_writes_atomically(config, finish=lambda text: text) -> None:
    """pytest-html writes report.html in place (``open("w")`` then write): route its one write through ours, the
    page's text passed through ``finish`` first."""
    from pytest_html.basereport import BaseReport

    for reporter in config.pluginmanager.get_plugins():
        if isinstance(reporter, BaseReport):
            reporter._write_report = lambda text, reporter=reporter: write_atomically(reporter._report_path,
                                                                                      finish(text))
