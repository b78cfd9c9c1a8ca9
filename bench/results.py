"""The results of one run: a flat list of rows, the same shape as results.csv.

A row is one number (or a missing number with a note saying why):
  section  moe_layer | sgemm | step | memory | compile | target
  config   the layer shape, model or example it belongs to
  impl     deepspeed | sortgather | moec | openblas | torch
  mode     fwd | fwdbwd | train | a GEMM shape | ''
  metric   tokens_per_s, ms, gflops, peak_rss_bytes, ...
"""
import csv
from dataclasses import dataclass, fields
from typing import Optional


@dataclass
class Row:
    section: str
    config: str
    impl: str
    mode: str
    metric: str
    value: Optional[float]
    unit: str = ""
    note: str = ""


def _number(value):
    """A CSV cell: empty when missing, integers in full (byte counts), else 6 significant digits."""
    if value is None:
        return ""
    return str(int(value)) if value.is_integer() else f"{value:.6g}"


class Results:
    """Rows in the order they were measured, looked up by (section, config, impl, mode, metric)."""

    def __init__(self):
        self.rows = []
        self.machine = {}
        self._index = {}

    def add(self, section, config, impl, mode, metric, value, unit="", note=""):
        row = Row(section, config, impl, mode, metric,
                  None if value is None else float(value), unit, note)
        self.rows.append(row)
        self._index[(section, config, impl, mode, metric)] = row
        return row

    def missing(self, section, config, impl, mode, metrics, note):
        """Record that none of `metrics` could be measured, and why."""
        for metric in metrics:
            self.add(section, config, impl, mode, metric, None, note=note)

    def row(self, section, config, impl, mode, metric):
        return self._index.get((section, config, impl, mode, metric))

    def value(self, section, config, impl, mode, metric):
        """The number, or None when it is missing or was never measured."""
        row = self.row(section, config, impl, mode, metric)
        return None if row is None else row.value

    def write_csv(self, path, first_line=""):
        """One row per number; first_line (the machine) goes first as a '# ' comment line."""
        names = [f.name for f in fields(Row)]
        with open(path, "w", newline="") as out:
            if first_line:
                out.write("# " + first_line + "\n")
            writer = csv.writer(out)
            writer.writerow(names)
            for row in self.rows:
                values = [getattr(row, name) for name in names]
                values[names.index("value")] = _number(row.value)
                writer.writerow(values)
