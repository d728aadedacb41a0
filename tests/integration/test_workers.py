"""``[server] workers = 2``: two processes share the ports, one of them delivers.

The server runs as an operator starts it; the tests look at what the operator
would: replies, the Maildir, the log (every worker's lines carry ``worker``) and
the processes themselves.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import smtplib
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from postgate.server.tls import generate_self_signed
from tests.conftest import ALICE, make_server
from tests.server_process import ServerProcess, port_accepts, wait_for

pytestmark = pytest.mark.slow

MESSAGES = 40


def send_one(port: int, number: int) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("peer.example")
        client.mail("someone@example.org")
        client.rcpt(ALICE[0])
        code, reply = client.data(f"Subject: {number}\r\n\r\nbody {number}\r\n".encode())
        assert code == 250, reply
        return reply.decode().rsplit(" ", 1)[-1]


def records(server: ServerProcess, event: str) -> list[dict[str, object]]:
    return [record for record in server.log_records() if record.get("event") == event]


def worker_pid(server: ServerProcess, index: int, not_pid: object = None) -> int:
    def started() -> object:
        pids = [
            record["pid"]
            for record in records(server, "worker started")
            if record.get("worker") == index and record["pid"] != not_pid
        ]
        return pids[-1] if pids else None

    pid = wait_for(started, 20, f"worker {index} to start")
    assert isinstance(pid, int)
    return pid


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def two_workers(tmp_path: Path) -> ServerProcess:
    return make_server(tmp_path / "pg", server_extra="workers = 2")


def test_both_workers_receive_and_the_primary_delivers(two_workers: ServerProcess) -> None:
    server = two_workers
    server.start()
    try:
        listening = wait_for(
            lambda: len(records(server, "listening")) >= 6 and records(server, "listening"),
            20,
            "both workers to listen on three ports",
        )
        assert isinstance(listening, list)
        assert {(r["worker"], r["port"]) for r in listening} == {
            (worker, port) for worker in (0, 1) for port in server.ports.values()
        }
        # Separate connections from separate source ports: the kernel's SO_REUSEPORT
        # hash sends them to both workers (all 40 on one would be a 2**-39 chance).
        with ThreadPoolExecutor(8) as pool:
            queue_ids = list(pool.map(lambda n: send_one(server.ports["mx"], n), range(MESSAGES)))
        assert len(set(queue_ids)) == MESSAGES
        files = server.wait_for_delivery(ALICE[0], MESSAGES, timeout=30)
        assert len(files) == MESSAGES
        bodies = {f.read_bytes().rsplit(b"body ", 1)[-1].strip() for f in files}
        assert bodies == {str(n).encode() for n in range(MESSAGES)}
        accepted = records(server, "accepted")
        assert {r["queue_id"] for r in accepted} == set(queue_ids)
        assert {r["worker"] for r in accepted} == {0, 1}
        deliveries = wait_for(
            lambda: len(records(server, "delivery")) >= MESSAGES and records(server, "delivery"),
            10,
            "a delivery record per message",
        )
        assert isinstance(deliveries, list)
        assert {r["worker"] for r in deliveries} == {0}
    finally:
        server.stop()
    assert server.process is not None and server.process.returncode == 0


def test_a_killed_primary_is_replaced_and_sigterm_stops_all(two_workers: ServerProcess) -> None:
    server = two_workers
    server.start()
    try:
        first = worker_pid(server, 0)
        other = worker_pid(server, 1)
        os.kill(first, signal.SIGKILL)
        server.wait_for_log(event="worker died; starting it again", worker=0)
        second = worker_pid(server, 0, not_pid=first)
        assert second != first and alive(second) and alive(other)
        wait_for(lambda: all(port_accepts(p) for p in server.ports.values()), 20, "ports")
        # The new primary delivers: mail queued by whichever worker reaches Alice.
        send_one(server.ports["mx"], 1)
        assert len(server.wait_for_delivery(ALICE[0], 1, timeout=30)) == 1
    finally:
        server.stop()
    assert server.process is not None and server.process.returncode == 0
    wait_for(lambda: not alive(second) and not alive(other), 10, "workers to exit")


def test_a_worker_that_cannot_start_stops_the_server_with_one_line(
    two_workers: ServerProcess,
) -> None:
    server = two_workers
    server.cert_file.unlink()
    result = subprocess.run(server.command("serve"), capture_output=True, timeout=60, check=False)
    assert result.returncode == 1
    lines = [line for line in result.stderr.decode().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr.decode()
    assert "tls.cert_file" in lines[0] and str(server.cert_file) in lines[0]


def ehlo_size(port: int) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("peer.example")
        return int(client.esmtp_features["size"])


def test_a_worker_started_after_a_reload_runs_the_reloaded_config(
    two_workers: ServerProcess,
) -> None:
    server = two_workers
    server.start()
    try:
        pids = [worker_pid(server, index) for index in (0, 1)]
        before = ehlo_size(server.ports["mx"])
        server.extra_config = '\n[limits]\nmax_message_size = "10M"\n'
        server.write_config()
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: len(records(server, "reloaded")) >= 2, 20, "both workers to reload")
        for index, pid in enumerate(pids):
            os.kill(pid, signal.SIGKILL)
            worker_pid(server, index, not_pid=pid)
        wait_for(lambda: len(records(server, "listening")) >= 12, 20, "the new workers")
        # Many connections, so both new workers answer some of them.
        sizes = {ehlo_size(server.ports["mx"]) for _ in range(16)}
        assert before != 10 * 1024 * 1024
        assert sizes == {10 * 1024 * 1024}
    finally:
        server.stop()


def test_a_reload_while_a_worker_starts_neither_kills_nor_is_lost(
    two_workers: ServerProcess,
) -> None:
    server = two_workers
    server.start()
    try:
        first = worker_pid(server, 1)
        assert server.process is not None
        os.kill(first, signal.SIGKILL)
        # Reloads as fast as we can send them, from before the new worker exists until
        # it has long started: none may end it.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            server.process.send_signal(signal.SIGHUP)
            time.sleep(0.005)
        second = worker_pid(server, 1, not_pid=first)
        time.sleep(0.5)
        died = [r for r in records(server, "worker died; starting it again")]
        assert len(died) == 1, died
        assert alive(second)
        assert any(r.get("worker") == 1 for r in records(server, "reloaded"))
        send_one(server.ports["mx"], 7)
        assert len(server.wait_for_delivery(ALICE[0], 1, timeout=20)) == 1
    finally:
        server.stop()
    assert server.process is not None and server.process.returncode == 0


def test_a_second_server_on_the_same_queue_is_refused(two_workers: ServerProcess) -> None:
    server = two_workers
    server.start()
    try:
        # Same file, same ports: SO_REUSEPORT alone would let it join the first.
        result = subprocess.run(
            server.command("serve"), capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 1
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert "another postgate" in lines[0] and f"pid {server.process.pid}" in lines[0]
        assert all(port_accepts(port) for port in server.ports.values())
    finally:
        server.stop()
    # Once it is gone, the queue is free again.
    server.start()
    server.stop()
    assert server.process is not None and server.process.returncode == 0


def test_workers_end_when_the_supervisor_is_killed(two_workers: ServerProcess) -> None:
    server = two_workers
    server.start()
    pids = [worker_pid(server, index) for index in (0, 1)]
    server.kill()
    wait_for(lambda: not any(alive(pid) for pid in pids), 20, "the workers to end")
    wait_for(
        lambda: not any(port_accepts(port) for port in server.ports.values()),
        5,
        "the ports to close",
    )


def test_log_lines_of_two_workers_on_stderr_stay_whole(tmp_path: Path) -> None:
    server = make_server(tmp_path / "pg", server_extra="workers = 2")
    text = server.config_path.read_text().replace('file = "postgate.log"\n', "")
    server.config_path.write_text(text)
    server.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: send_one(server.ports["mx"], n), range(MESSAGES)))
        server.wait_for_delivery(ALICE[0], MESSAGES, timeout=30)
    finally:
        server.stop()
    lines = [line for line in server.stderr_path.read_text().splitlines() if line.startswith("{")]
    parsed = [json.loads(line) for line in lines]  # a spliced line would not parse
    assert sum(1 for record in parsed if record.get("event") == "accepted") == MESSAGES


def test_absurd_worker_counts_are_refused(tmp_path: Path) -> None:
    server = make_server(tmp_path / "pg", server_extra="workers = 1000")
    result = subprocess.run(
        server.command("config", "check"), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "server.workers" in result.stderr and "at most 64" in result.stderr


def test_a_first_start_with_no_queue_directory_is_locked_too(tmp_path: Path) -> None:
    server = make_server(tmp_path / "pg", server_extra="workers = 2")
    server.queue_extra = 'path = "spool/new/queue.db"'  # a directory nobody made yet
    server.write_config()
    server.start()
    try:
        result = subprocess.run(
            server.command("serve"), capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 1 and "another postgate" in result.stderr
        assert (server.root / "spool" / "new" / "queue.db.pid").is_file()
    finally:
        server.stop()


def test_something_odd_at_the_lock_path_is_one_line(tmp_path: Path) -> None:
    server = make_server(tmp_path / "pg")
    server.data_dir.mkdir(parents=True, exist_ok=True)
    os.mkfifo(server.data_dir / "queue.db.pid")
    result = subprocess.run(
        server.command("serve"), capture_output=True, text=True, timeout=60, check=False
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "not a regular file" in lines[0]


def test_a_reload_the_workers_refused_does_not_take_the_server_down(
    two_workers: ServerProcess, tmp_path: Path
) -> None:
    server = two_workers
    server.start()
    try:
        wait_for(lambda: len(records(server, "listening")) >= 6, 20, "both workers to serve")
        time.sleep(0.3)  # "listening" is logged just before a worker reports it serves
        # A key that does not belong to the certificate: the workers refuse the reload
        # and keep serving; a worker started afterwards must not stop everything.
        other = tmp_path / "other"
        generate_self_signed(other / "cert.pem", other / "key.pem", "other.example")
        text = server.config_path.read_text()
        server.config_path.write_text(
            text.replace('key_file = "tls/privkey.pem"', f'key_file = "{other / "key.pem"}"')
        )
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: len(records(server, "reload failed, keeping the running configuration")) >= 2,
            20,
            "both workers to refuse the reload",
        )
        os.kill(worker_pid(server, 1), signal.SIGKILL)
        server.wait_for_log(event="worker could not start; trying again", worker=1)
        server.wait_for_log(
            event="reloaded configuration does not start; back to the last good one"
        )
        # Tried again, after a pause, with the configuration that last started: it serves.
        wait_for(
            lambda: sum(1 for r in records(server, "listening") if r.get("worker") == 1) >= 6,
            20,
            "worker 1 to serve again",
        )
        assert server.process.poll() is None
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda n: send_one(server.ports["mx"], n), range(12)))
        assert len(server.wait_for_delivery(ALICE[0], 12, timeout=30)) == 12
    finally:
        server.stop()


def test_a_restarted_primary_keeps_the_queue_it_was_serving(two_workers: ServerProcess) -> None:
    server = two_workers
    server.start()
    try:
        # queue.path changes only at a restart of the whole server, not of one worker.
        server.queue_extra = 'path = "data/elsewhere.db"'
        server.write_config()
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: len(records(server, "reloaded")) >= 2, 20, "both workers to reload")
        first = worker_pid(server, 0)
        os.kill(first, signal.SIGKILL)
        worker_pid(server, 0, not_pid=first)
        wait_for(lambda: len(records(server, "listening")) >= 9, 20, "the new primary")
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda n: send_one(server.ports["mx"], n), range(12)))
        assert len(server.wait_for_delivery(ALICE[0], 12, timeout=30)) == 12
        assert not (server.data_dir / "elsewhere.db").exists()
    finally:
        server.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_while_the_server_starts_does_not_end_it(tmp_path: Path, workers: int) -> None:
    server = make_server(tmp_path / "pg", server_extra=f"workers = {workers}")
    with open(server.stderr_path, "ab") as stderr:
        process = subprocess.Popen(server.command("serve"), stderr=stderr, cwd=server.root)
    server.process = process
    try:
        # From the moment our code runs (the interpreter's start and the first imports,
        # about 0.1 s, are what Type=notify in the systemd unit covers) until well
        # after the server is up.
        time.sleep(0.3)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and process.poll() is None:
            process.send_signal(signal.SIGHUP)
            time.sleep(0.01)
        assert process.poll() is None, server.stderr_path.read_text()
        wait_for(lambda: all(port_accepts(p) for p in server.ports.values()), 20, "listening")
        send_one(server.ports["mx"], 1)
        assert len(server.wait_for_delivery(ALICE[0], 1, timeout=20)) == 1
    finally:
        server.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_systemd_hears_ready_once_the_server_serves(tmp_path: Path, workers: int) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    listener.settimeout(20)
    server = make_server(tmp_path / "pg", server_extra=f"workers = {workers}")
    environment = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}
    with open(server.stderr_path, "ab") as stderr:
        server.process = subprocess.Popen(
            server.command("serve"), stderr=stderr, cwd=server.root, env=environment
        )
    try:
        message = listener.recv(4096).decode()
        assert "READY=1" in message.splitlines()
        assert f"MAINPID={server.process.pid}" in message.splitlines()
        assert all(port_accepts(port) for port in server.ports.values())
    finally:
        server.stop()
        listener.close()


def test_a_worker_that_served_and_cannot_start_is_retried_not_fatal(
    two_workers: ServerProcess,
) -> None:
    server = two_workers
    server.start()
    try:
        # Serving first (the ports accept before the workers do: the supervisor bound them).
        wait_for(lambda: len(records(server, "listening")) >= 6, 20, "both workers to serve")
        time.sleep(0.3)  # "listening" is logged just before a worker reports it serves
        # A certificate renewed by a non-atomic copy: missing while a worker restarts.
        hidden = server.cert_file.with_name("hidden.pem")
        server.cert_file.rename(hidden)
        os.kill(worker_pid(server, 1), signal.SIGKILL)
        server.wait_for_log(event="worker could not start; trying again", worker=1)
        time.sleep(1.5)
        assert server.process is not None and server.process.poll() is None
        assert port_accepts(server.ports["mx"])  # worker 0 serves meanwhile
        hidden.rename(server.cert_file)
        wait_for(
            lambda: sum(1 for r in records(server, "listening") if r.get("worker") == 1) >= 6,
            30,
            "worker 1 to serve again",
        )
        send_one(server.ports["mx"], 3)
        assert len(server.wait_for_delivery(ALICE[0], 1, timeout=20)) == 1
    finally:
        server.stop()
    assert server.process is not None and server.process.returncode == 0


def test_the_server_is_announced_once(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    listener.settimeout(0.5)
    server = make_server(tmp_path / "pg", server_extra="workers = 2")
    environment = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}
    with open(server.stderr_path, "ab") as stderr:
        server.process = subprocess.Popen(
            server.command("serve"), stderr=stderr, cwd=server.root, env=environment
        )
    messages = []
    try:
        # The supervisor binds the ports, so they accept before a worker has started:
        # count the workers' own "listening" records (one per port per start), so that
        # no worker is killed before it has announced itself.
        per_start = len(server.ports)
        wait_for(lambda: len(records(server, "listening")) >= 2 * per_start, 20, "both workers")
        for restarts, index in enumerate((0, 1, 0), start=1):
            os.kill(worker_pid(server, index), signal.SIGKILL)
            expected = (2 + restarts) * per_start
            wait_for(
                lambda expected=expected: len(records(server, "listening")) >= expected,
                20,
                f"restart {restarts} of the workers",
            )
        with contextlib.suppress(TimeoutError):
            while True:
                messages.append(listener.recv(4096).decode())
    finally:
        server.stop()
        listener.close()
    assert [m for m in messages if "READY=1" in m] == [f"READY=1\nMAINPID={server.process.pid}"]
    banner = [line for line in server.stderr_path.read_text().splitlines() if "listening:" in line]
    assert len(banner) == 1


def test_repeated_signals_during_a_stop_still_end_it_cleanly(two_workers: ServerProcess) -> None:
    server = two_workers
    server.start()
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    while server.process.poll() is None and time.monotonic() < deadline:
        for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ProcessLookupError):
                server.process.send_signal(signum)
        time.sleep(0.001)
    assert server.process.wait(timeout=10) == 0
