"""The one log format of styleforge processes: time, level, logger, message.

A stage run by `dvc repro` writes its lines to stderr, where the flows read them back with their
level (flows/repro.py) into the Prefect task run's log, and to logs/<stage>.log in the project.
Lines go out through tqdm.write, so they never break a progress bar mid-line.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from tqdm import tqdm

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVEL_ENV = "STYLEFORGE_LOG_LEVEL"  # set by --verbose/--quiet; inherited by the stages dvc starts
LOGS_DIR = Path("logs")


class _TqdmHandler(logging.StreamHandler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never take the run down
            self.handleError(record)


def setup(log_file: Path | None = None) -> None:
    """Log styleforge's lines at the level of STYLEFORGE_LOG_LEVEL (INFO by default) to stderr and,
    when given, to log_file (appended: a log of every run of that stage)."""
    level = os.environ.get(LEVEL_ENV, "INFO").upper()
    logger = logging.getLogger("styleforge")
    logger.setLevel(level)
    logger.propagate = False
    formatter = logging.Formatter(FORMAT)
    handlers: list[logging.Handler] = [_TqdmHandler()]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)


def to_file_only(name: str, level: int, message: str) -> None:
    """Log a line into the log file alone: for an error the command prints itself as its one line."""
    logger = logging.getLogger(name)
    record = logger.makeRecord(logger.name, level, "(styleforge)", 0, message, (), None)
    for handler in logging.getLogger("styleforge").handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
