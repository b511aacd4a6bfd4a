"""The summary and the ``treason logs`` command."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from treason.cli import main
from treason.kernel import kernel_lines
from treason.logs.bulk import read_logs
from treason.logs.summary import render_logwatch, render_text, summarise

SEED = Path(__file__).parent / "data" / "logs" / "seed-logwatch.log"
SEED_X = [1898670412, 1911943385, 1922304386, 1922444120, 1949802160]


def test_the_seeds_five_lines() -> None:
    scan = read_logs([str(SEED)])
    assert [ln.shrink.x for ln in scan.lines] == SEED_X
    (host,) = summarise(scan.lines)
    assert host.host == "www" and host.eras() == ["2.4.17"]
    (conn,) = host.connections.values()
    assert (conn.peer, conn.peer_port, conn.local_port) == ("203.0.113.7", 2315, 80)
    assert list(conn.episodes) == SEED_X  # five stalls of one connection, not one
    assert all(ep.outstanding == 1 and ep.count == 1 for ep in conn.episodes.values())
    text = render_text([host])
    assert "5 report(s), 1 connection(s), 5 stall episode(s), 1 peer(s)" in text
    assert "80 (http)" in text and "Linux 2.4.17 – 2.6.28" in text
    assert "Y-X is 1 everywhere" in text


def _write(tmp_path: Path, lines: list[str]) -> str:
    path = tmp_path / "kern.log"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_backed_off_repeats_are_one_stalled_connection(tmp_path: Path) -> None:
    msg = kernel_lines("192.0.2.9", 40000, 22, 100, 1548)["3.13"]
    seconds = [0, 1, 3, 7, 15]  # RTO doubling
    path = _write(tmp_path, [f"[{1000 + s:>5}.000000] {msg}" for s in seconds])
    (host,) = summarise(read_logs([path]).lines)
    (conn,) = host.connections.values()
    (ep,) = conn.episodes.values()
    assert ep.count == 5 and ep.backed_off and ep.outstanding == 1448
    assert "at backed-off intervals" in render_text([host])


def test_irregular_repeats_are_not_called_backed_off(tmp_path: Path) -> None:
    msg = kernel_lines("192.0.2.9", 40000, 22, 100, 101)["3.13"]
    path = _write(tmp_path, [f"[{1000 + s:>5}.000000] {msg}" for s in (0, 8, 9, 20)])
    (ep,) = next(iter(summarise(read_logs([path]).lines)[0].connections.values())).episodes.values()
    assert not ep.backed_off


def test_multi_host_logs_are_summarised_per_host(tmp_path: Path) -> None:
    a = kernel_lines("192.0.2.1", 1000, 443, 1, 2)["3.13"]
    b = kernel_lines("::ffff:192.0.2.1", 1000, 443, 1, 2)["2.6.29"]
    path = _write(
        tmp_path, [f"Mar  5 06:07:08 alpha kernel: {a}", f"Mar  5 06:07:09 beta kernel: {b}"]
    )
    hosts = summarise(read_logs([path]).lines)
    assert [(h.host, h.eras()) for h in hosts] == [("alpha", ["3.13"]), ("beta", ["2.6.29"])]


def test_cli_json_csv_and_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "--format", "json", str(SEED)]) == 1
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(rows) == 5
    for key in ("time", "host", "peer", "peer_port", "local_port", "x", "y", "wording", "raw"):
        assert key in rows[0]
    assert (rows[0]["peer"], rows[0]["peer_port"], rows[0]["local_port"]) == (
        "203.0.113.7",
        2315,
        80,
    )
    assert rows[0]["raw"] == SEED.read_text().splitlines()[0]
    out = tmp_path / "out.csv"
    assert main(["logs", "--format", "csv", "-o", str(out), str(SEED)]) == 1
    assert [int(r["x"]) for r in csv.DictReader(io.StringIO(out.read_text()))] == SEED_X
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no temporary left behind
    empty = _write(tmp_path, ["Mar  5 06:07:08 h kernel: nothing to see"])
    assert main(["logs", empty]) == 0
    capsys.readouterr()
    assert main(["logs", str(tmp_path / "missing.log")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.log" in err


def test_terminal_output_never_carries_escape_sequences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    msg = kernel_lines("192.0.2.1", 1, 2, 3, 4)["3.13"]
    path = tmp_path / "evil.log"
    path.write_bytes(f"Mar  5 06:07:08 \x1b[2Jevil\x07 kernel: {msg}\n".encode())
    assert main(["logs", str(path)]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\\x1b[2Jevil\\x07" in out


def test_thousands_of_episodes_stay_readable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The top entries and "... and N more" by default; everything at --detail 10."""
    rows = []
    for peer in range(30):
        for x in range(100 if peer == 0 else 2):
            msg = kernel_lines(f"192.0.2.{peer + 1}", 40000, 443, 1000 * x, 1000 * x + 1)["3.13"]
            rows.append(f"Mar  5 06:07:08 web1 kernel: {msg}")
    path = _write(tmp_path, rows)
    assert main(["logs", path]) == 1
    text = capsys.readouterr().out
    assert "158 report(s), 30 connection(s), 158 stall episode(s), 30 peer(s)" in text
    assert "192.0.2.1: 100 report(s)" in text  # the busiest peer is among the top entries
    assert "… and 20 more peer(s) (all of them: --detail 10)" in text
    assert "… and 90 more episode(s)" in text
    assert text.count("X=") == 10 + 9 * 2  # ten connections: ten episodes of the first
    assert main(["logs", "--detail", "10", path]) == 1
    full = capsys.readouterr().out
    assert "more peer(s)" not in full and full.count("X=") == 158
    assert main(["logs", "--detail", "High", "--no-explain", path]) == 1
    assert "What this means" not in capsys.readouterr().out


def test_logwatch_section_short_below_detail_5_and_raw_lines_from_5(tmp_path: Path) -> None:
    msg = kernel_lines("192.0.2.9", 40000, 22, 100, 101)["3.13"]
    path = _write(tmp_path, [f"Mar  5 06:07:0{s} web1 kernel: {msg}" for s in range(3)])
    scan = read_logs([path])
    short = render_logwatch(scan, 0)
    assert "web1: 3 report(s), 1 connection(s), 1 stall episode(s), 1 peer(s)" in short
    assert "Time(s)" not in short and "X=" not in short and short.count("What this means") == 1
    long = render_logwatch(scan, 5)
    assert f"3 Time(s): {msg}" in long and "X=100 Y=101" in long
    assert long.count("What this means") == 1
    assert render_logwatch(read_logs([_write(tmp_path, ["nothing"])]), 10) == ""
