"""``--format parquet``: events as a Parquet file for DuckDB, pandas or Spark.

Written in row groups of ``ROW_GROUP`` events as they stream in, so memory stays that of one
row group however big the capture set. The columns are the JSON record's (docs/events.md), with
Parquet types: sequence numbers as int64 (they are unsigned 32-bit), ``vlan`` a list of int32,
``kernel_lines`` a map from era to line. pyarrow is an optional dependency:
``pip install 'treason[parquet]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, BinaryIO

from treason.errors import TreasonError
from treason.events import Event
from treason.scanner import ScanStats

if TYPE_CHECKING:
    import pyarrow  # type: ignore[import-untyped,unused-ignore]

#: Events per row group: large enough for fast scans by readers, small enough to hold.
ROW_GROUP = 65_536


def require_pyarrow() -> None:
    """One line instead of an ImportError when the optional dependency is missing."""
    try:
        import pyarrow.parquet  # type: ignore[import-untyped,unused-ignore]  # noqa: F401
    except ImportError:
        raise TreasonError(
            "--format parquet", "needs pyarrow: pip install 'treason[parquet]'"
        ) from None


def schema() -> pyarrow.Schema:
    import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

    i64, text = pa.int64(), pa.string()
    return pa.schema(
        [
            ("file", text),
            ("frame", i64),
            ("time", pa.float64()),
            ("src", text),
            ("sport", pa.int32()),
            ("dst", text),
            ("dport", pa.int32()),
            ("vlan", pa.list_(pa.int32())),
            ("class", text),
            ("closing", pa.bool_()),
            ("certainty", text),
            ("old_edge", i64),
            ("new_edge", i64),
            ("shrink_bytes", i64),
            ("beyond_bytes", i64),
            ("snd_una", i64),
            ("snd_nxt", i64),
            ("ack", i64),
            ("win", pa.int32()),
            ("scale", pa.int32()),
            ("scale_known", pa.bool_()),
            ("kernel_line", text),
            ("kernel_lines", pa.map_(text, text)),
            ("tunnel", pa.list_(text)),
            ("outer", pa.list_(pa.list_(text))),
            ("capture_set", pa.int32()),
        ]
    )


class Parquet:
    """Events into ``out`` (a binary stream), one row group per ``row_group`` events.

    Events are gathered ``BATCH`` at a time into Python lists, then into compact Arrow record
    batches; a row group is written when the batches hold ``row_group`` rows.
    """

    BATCH = 4096

    def __init__(self, out: BinaryIO, row_group: int = ROW_GROUP) -> None:
        import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]

        self.schema = schema()
        self.row_group = row_group
        self.writer = pq.ParquetWriter(out, self.schema, compression="zstd")
        self._rows: dict[str, list[Any]] = {name: [] for name in self.schema.names}
        self._count = 0
        self._batches: list[pyarrow.RecordBatch] = []
        self._batched = 0

    def add(self, event: Event) -> None:
        record = event.to_dict()
        record["kernel_lines"] = list(record["kernel_lines"].items())
        for name, column in self._rows.items():
            column.append(record[name])
        self._count += 1
        if self._count >= min(self.BATCH, self.row_group):
            self._batch()
            if self._batched >= self.row_group:
                self._write()

    def finish(self, stats: ScanStats) -> None:
        """Write the last row group and the footer (no row group when nothing was found)."""
        self._batch()
        self._write()
        self.writer.close()

    def _batch(self) -> None:
        import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

        if not self._count:
            return
        self._batches.append(pa.RecordBatch.from_pydict(self._rows, schema=self.schema))
        self._batched += self._count
        for column in self._rows.values():
            column.clear()
        self._count = 0

    def _write(self) -> None:
        import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]

        if not self._batches:
            return
        table = pa.Table.from_batches(self._batches, schema=self.schema)
        self.writer.write_table(table, row_group_size=self.row_group)
        self._batches.clear()
        self._batched = 0
