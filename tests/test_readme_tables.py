"""The README's seeded tables show the numbers of their last run, docs/readme_tables.json.

``scripts/readme_tables.py`` reruns each table's command, records it and rewrites the
table; this test reruns nothing: it reads the README and the record, and checks every
number the README shows against the record at the precision the README shows it.
"""

import json
import re
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RECORD = ROOT / "docs" / "readme_tables.json"
REGION = re.compile(r"<!-- table:([\w-]+) -->\n(.*?)<!-- /table -->", flags=re.S)


def _regions() -> dict[str, str]:
    return dict(REGION.findall(README.read_text()))


def _tables() -> dict[str, dict]:
    return json.loads(RECORD.read_text())["tables"]


def _markdown_table(region: str) -> tuple[list[str], list[list[str]]]:
    """Header cells and body rows of the one markdown table in ``region``."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in region.splitlines()
        if line.startswith("|")
    ]
    assert rows and set(rows[1]) == {"---"}, region
    return rows[0], rows[2:]


def _shows(cell: str, value) -> bool:
    """Whether ``cell`` is ``value`` rounded to the digits the cell shows."""
    cell = cell.removeprefix("**").removesuffix("**")
    if value is None:
        return cell == "–"
    if isinstance(value, str):
        return cell == value
    shown = Decimal(cell)
    # Half a unit in the last digit shown, e.g. 0.005 for "2.18", 5e-7 for "3.0e-5";
    # the 1e-9 allows for the record's float being a binary approximation.
    half_unit = Decimal(1).scaleb(shown.as_tuple().exponent) / 2
    return abs(shown - Decimal(repr(value))) <= half_unit * Decimal("1.000000001")


def test_every_table_region_has_a_record_and_every_record_a_region():
    assert _regions(), "README.md has no <!-- table:NAME --> regions"
    assert set(_regions()) == set(_tables())


def test_the_readme_tables_show_the_recorded_numbers():
    tables = _tables()
    for name, region in _regions().items():
        entry = tables[name]
        header, rows = _markdown_table(region)
        assert header == entry["columns"], name
        assert len(rows) == len(entry["rows"]), name
        for cells, (label, *values) in zip(rows, entry["rows"], strict=True):
            assert cells[0] == label, (name, cells)
            for cell, value in zip(cells[1:], values, strict=True):
                assert _shows(cell, value), (name, label, cell, value)
            bold = [v for c, v in zip(cells[1:], values, strict=True) if c.startswith("**")]
            numbers = [v for v in values if isinstance(v, float)]
            assert all(v == min(numbers) for v in bold), (name, label, "bold is not the best")


def test_the_captions_name_the_command_and_the_recorded_wall_time():
    tables = _tables()
    for name, region in _regions().items():
        entry = tables[name]
        region = " ".join(region.split())  # the caption is wrapped
        assert f"`{entry['command']}`" in region, name
        match = re.search(r"(\d+(?:\.\d+)?) (s|min) wall", region)
        assert match, (name, "no wall time")
        # The caption's time is the record's, to the digit it shows, and says it is the
        # machine's.
        seconds = float(match.group(1)) * (60 if match.group(2) == "min" else 1)
        shown_unit = 6.0 if match.group(2) == "min" else 1.0
        assert abs(seconds - entry["wall_seconds"]) <= shown_unit / 2, name
        assert "depends on the machine" in region, name
