"""CSV files a person opens in a spreadsheet (the own-images run's ``to_label/*.csv``,
``predictions.csv``, ``images.csv``): a cell that begins like a formula (``=``, ``+``, ``-``, ``@``,
tab, carriage return) is written with a leading single quote, so a spreadsheet shows it as text
and never runs it (OWASP's rule against CSV injection), and read back without it. Cells that already
begin with quotes before such a character get one more, so every value reads back as written."""

from __future__ import annotations

import csv
import io
from typing import TextIO

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def escape(value) -> str:
    """``value`` as a cell no spreadsheet takes for a formula."""
    text = str(value)
    return "'" + text if text.lstrip("'").startswith(FORMULA_START) else text


def unescape(text: str) -> str:
    """The value of a cell :func:`escape` wrote (a cell without the quote, as a person may type it,
    reads as itself)."""
    return text[1:] if text.startswith("'") and text.lstrip("'").startswith(FORMULA_START) else text


def csv_text(header: list, rows: list) -> str:
    """The CSV text of ``header`` and ``rows``, every cell escaped; lines end in CR LF (RFC 4180, as
    spreadsheets write them), so a cell holding a line break or a carriage return is quoted."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow([escape(cell) for cell in header])
    writer.writerows([escape(cell) for cell in row] for row in rows)
    return text.getvalue()


def read_rows(fh: TextIO) -> tuple[list, list[dict]]:
    """(header, rows as dicts) of the CSV file ``fh``, every cell unescaped."""
    reader = csv.DictReader(fh)
    rows = [{key: unescape(value) if isinstance(value, str) else value for key, value in row.items()}
            for row in reader]
    return reader.fieldnames or [], rows
