"""Read a delimited text file with a header strictly: every row has exactly the header's fields.

pandas alone would make a surplus first column the index when the first data row has one more field
than the header, and report other surplus fields without the column names; here both are a
:class:`~ghrs.data.dataset.DataError` naming the file, the line and the problem.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pandas as pd

from ghrs.data.dataset import DataError


def _field_count_line(path: Path, sep: str) -> tuple[int, int, int] | None:
    """(line, fields, header fields) of the first row whose field count differs from the header's."""
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh, delimiter=sep)
        header = next(reader, None)
        if header is None:
            return None
        for row in reader:
            if row and len(row) != len(header):
                return reader.line_num, len(row), len(header)
    return None


def read_csv_strict(path: str | Path, sep: str = ",", **kwargs) -> pd.DataFrame:
    """``pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""], **kwargs)``, strictly."""
    p = Path(path).expanduser()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)  # "loss of data with index_col=False"
            return pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False, na_values=[""], index_col=False,
                               **kwargs)
    except pd.errors.EmptyDataError as err:
        raise DataError("empty file", str(p)) from err
    except (pd.errors.ParserError, pd.errors.ParserWarning) as err:
        found = _field_count_line(p, sep) if len(sep) == 1 else None
        if found:
            line, saw, expected = found
            kind = "an extra field" if saw > expected else "a missing field"
            raise DataError(f"{saw} fields where the header has {expected}: {kind}", str(p), line) from err
        raise DataError(f"malformed row: {' '.join(str(err).split())}", str(p)) from err

