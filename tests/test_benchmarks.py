"""The benchmarks' reporting on the committed results (the benchmarks themselves run real
migrations in the lab: ``python -m benchmarks.policies`` / ``benchmarks.faults``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import compare

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def test_compare_reads_every_committed_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "compare.json"
    assert compare.main(["--results", str(RESULTS), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "== policies: KVM | TCG" in printed and "== faults: KVM | TCG" in printed
    pairs = json.loads(out.read_text())
    assert pairs["faults"] and all(set(p) >= {"kvm", "tcg"} for p in pairs["faults"])


@pytest.mark.parametrize("name", ["policies", "faults", "drain"])
def test_kvm_results_say_where_they_ran(name: str) -> None:
    doc = json.loads((RESULTS / "kvm" / f"{name}.json").read_text())
    env = doc["environment"]
    for key in ("accelerator", "kernel", "debian", "qemu", "libvirt", "libvirt_python",
                "link", "commit", "date"):  # fmt: skip
        assert env.get(key), (name, key)
    assert env["accelerator"] == "kvm"


def test_the_control_plane_result_is_whole() -> None:
    """benchmarks/control_plane.py's committed run: every figure the README quotes."""
    doc = json.loads((RESULTS / "control_plane.json").read_text())
    burst, kill = doc["burst"], doc["kill"]
    assert burst["requests"] == 200 and burst["records"] == burst["accepted"]
    assert burst["most_vms_on_a_host"] <= burst["vms_that_fit_on_a_host"]
    assert kill["migrations"] == 100 and kill["started_twice"] == 0
    assert {a["rate_per_s"] for a in doc["api_load"]} == {200, 50}
    assert doc["api_load_alone"]["rate_per_s"] == 200
    assert doc["api_load_alone"]["migrations_meanwhile"] == 0
    sampling = doc["sampling"]
    assert sampling["completed"] == sampling["migrations"] == 50
    assert sampling["running_in_the_window"] == 50  # all at once, as the README says
    assert len(sampling["steady_cpu_percent_of_a_core"]) == 2
    assert doc["environment"]["commit"] and doc["environment"]["cpus"]


def test_a_short_migration_is_judged_by_its_median_run() -> None:
    from benchmarks.policies import Run, median_run

    def run(total_s: float, errors: int = 0, converged: bool = True) -> Run:
        return Run("quiet", "auto", converged, total_s, 0.2, 50, 0.04, 3, 0, None, 0.0,
                   errors, "h2", score=total_s if converged else None)  # fmt: skip

    kept = median_run([run(2.03), run(0.83, errors=1), run(1.02)])
    assert kept.total_s == 1.02
    assert kept.repeat_totals_s == [2.03, 0.83, 1.02]
    assert kept.verification_errors == 1  # every repeat's count, not the median's
    assert median_run([run(0.9), run(20.4, converged=False), run(1.1)]).total_s == 1.1


def test_the_api_load_resends_a_get_on_a_kept_connection_the_server_reset() -> None:
    """uvicorn closes a connection idle for 5 s; a GET that reaches it as it closes is
    answered by a reset (one run counted it an error). The load client opens a new
    connection and sends the GET again, as HTTP clients do; a new connection reset is an
    error still."""
    import asyncio
    import socket
    import struct
    from concurrent.futures import ThreadPoolExecutor

    from benchmarks.control_plane import RawHttp

    answered: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:  # keep-alive: one request after another
            try:
                await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:  # the client closed it
                writer.close()
                return
            if len(answered) == 1:  # the kept connection's second request: reset it
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                answered.append(0)
                return
            answered.append(200)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    async def run() -> tuple[int, int, int]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = RawHttp(f"http://127.0.0.1:{port}", {}, connections=1)
        first = await client.get("/")
        second = await client.get("/")  # on the kept connection: reset, then resent
        client.close()
        server.close()
        return first, second, client.reconnects

    # on a thread of its own: the suite's main thread may hold another test's event loop
    with ThreadPoolExecutor(1) as pool:
        outcome = pool.submit(asyncio.run, asyncio.wait_for(run(), 10.0)).result(timeout=20.0)
    assert outcome == (200, 200, 1)
    assert answered == [200, 0, 200]
