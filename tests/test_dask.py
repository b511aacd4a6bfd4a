"""A real Dask cluster: a scheduler and two worker processes started here on 127.0.0.1 (the
``dask scheduler`` / ``dask worker`` commands, random ports), scanning the pieces of a capture
named by ``file://`` URLs and by ``s3://`` URLs served by a local S3 endpoint (moto's server).
The workers open the pieces themselves; the result must equal the plain scan of the same set.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from test_capture_sets import CORPUS, as_whole, outcome, records_of, split_at, write_pieces
from treason.scanner import fast_available

distributed = pytest.importorskip("distributed", reason="treason[dask] not installed")
pytest.importorskip("fsspec", reason="treason[dask] not installed")

ROOT = Path(__file__).resolve().parent.parent
ENGINE = "fast" if fast_available() else "reference"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Fake credentials for the local S3 endpoint, in this process and the workers.
AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, **AWS, "PYTHONPATH": path}


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A scheduler and two single-threaded worker processes, each its own OS process."""
    if shutil.which("dask") is None:
        pytest.skip("the dask command (distributed) is not on PATH")
    tmp = tmp_path_factory.mktemp("dask")
    info = tmp / "scheduler.json"
    port = free_port()
    common = ["--no-dashboard", "--host", "127.0.0.1"]
    procs = [
        subprocess.Popen(
            ["dask", "scheduler", *common, "--port", str(port), "--scheduler-file", str(info)],
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert info.exists(), "the Dask scheduler did not start"
        address = json.loads(info.read_text())["address"]
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    ["dask", "worker", address, *common, "--nthreads", "1", "--nworkers", "1"],
                    env=env(),
                    cwd=tmp,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            pids = client.run(os.getpid)
            assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
            yield client
    finally:
        stop(procs[::-1])


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """moto's S3 server on 127.0.0.1 and the fsspec storage options that reach it."""
    pytest.importorskip("s3fs", reason="treason[dask] (s3fs) not installed")
    pytest.importorskip("moto.server", reason="moto[server] not installed")
    mp = pytest.MonkeyPatch()
    for name, value in AWS.items():
        mp.setenv(name, value)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": url},
        }
    finally:
        stop([proc])
        mp.undo()


def pieces(tmp: Path) -> tuple[bytes, list[Path], list[list[bytes]]]:
    blob = CORPUS["shrink.pcap"]
    header, records, _ = records_of(blob)
    groups = split_at(records, [5, 40, 41, 120, 300])
    return header, write_pieces(tmp, header, groups), groups


def plain(paths: list[Path]) -> tuple[list[dict], dict]:
    return outcome([str(p) for p in paths], ENGINE)


def on_cluster(client: Any, sources: list[str], **kw: Any) -> tuple[list[dict], dict]:
    from treason import dask as tdask

    done = tdask.scan(client, sources, engine=ENGINE, retractions=True, idle_timeout=2.0, **kw)
    assert not done.errors
    return [e.to_dict() for e in done.events], done.stats.to_dict()


def test_file_urls_on_a_real_scheduler(cluster: Any, tmp_path: Path) -> None:
    _, paths, groups = pieces(tmp_path)
    want_events, want_stats = plain(paths)
    assert want_events, "the capture should have events"
    urls = [p.as_uri() for p in reversed(paths)]
    events, stats = on_cluster(cluster, urls)
    assert stats == want_stats
    assert [e["file"] for e in events] == [Path(e["file"]).as_uri() for e in want_events]
    back = [{**e, "file": e["file"].removeprefix("file://")} for e in events]
    assert as_whole(back, paths, groups) == as_whole(want_events, paths, groups)


def test_s3_urls_on_a_real_scheduler(cluster: Any, s3: dict[str, Any], tmp_path: Path) -> None:
    import s3fs

    _, paths, groups = pieces(tmp_path)
    fs = s3fs.S3FileSystem(**s3)
    fs.mkdir("captures")  # a bucket
    for path in paths:
        fs.put(str(path), f"captures/{path.name}")
    want_events, want_stats = plain(paths)
    urls = [f"s3://captures/{p.name}" for p in paths[::-1]]
    events, stats = on_cluster(cluster, urls, storage_options=s3)
    assert stats == want_stats
    by_url = {f"s3://captures/{p.name}": str(p) for p in paths}
    back = [{**e, "file": by_url[e["file"]]} for e in events]
    assert as_whole(back, paths, groups) == as_whole(want_events, paths, groups)
