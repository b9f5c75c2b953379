"""The README's first command, for real: `make run` sets up, seeds and serves all processes."""

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback only)
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_make_run_serves_admin_and_portal_then_stops_on_ctrl_c(tmp_path):
    port = _free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CELERY_BROKER_URL"}
    }
    # Embedded defaults (SQLite, filesystem broker) in a directory of this test's own.
    env["TOLLGATE_VAR_DIR"] = str(tmp_path)
    log = open(tmp_path / "run.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        ["make", "run", f"PORT={port}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        statuses = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(statuses) < 2:
            assert process.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            for path in ("/admin/login/", "/portal/login/"):
                try:
                    statuses[path] = _get(f"http://127.0.0.1:{port}{path}")
                except OSError:
                    time.sleep(0.5)
        assert statuses == {"/admin/login/": 200, "/portal/login/": 200}
        # The worker and beat came up beside the web server.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            output = (tmp_path / "run.log").read_text()
            if "celery@" in output and "ready" in output and "beat: Starting" in output:
                break
            time.sleep(0.5)
        assert "ready" in output and "beat: Starting" in output, output[-3000:]
        assert "alice" in output  # the demo logins were printed
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                raise
        log.close()
    # Everything stopped: nothing listens on the port any more.
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
