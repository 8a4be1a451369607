"""The README's course command (`make lab`) starts JupyterLab with the course kernel registered.

Checked headless: the server answers, serves the Lab page, and lists the `cvdl` kernel.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.skipif(not (ROOT / ".venv" / ".cvdl-installed").exists() or shutil.which("make") is None,
                    reason="the course was not set up with `make` (no .venv); nothing to start")
def test_make_lab_serves_jupyterlab_with_the_course_kernel(tmp_path):
    port, token = _free_port(), secrets.token_hex(16)
    args = f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} --IdentityProvider.token={token}"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"))
    proc = subprocess.Popen(["make", "-s", "lab", f"LAB_ARGS={args}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        specs = None
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{base}/api/kernelspecs?token={token}", timeout=5) as r:
                    specs = json.load(r)
                break
            except OSError:
                time.sleep(0.5)
        assert specs is not None, f"JupyterLab did not answer on {base} (exit code {proc.poll()})"
        assert "cvdl" in specs["kernelspecs"], f"kernel 'cvdl' not registered: {list(specs['kernelspecs'])}"
        spec = specs["kernelspecs"]["cvdl"]["spec"]
        assert spec["display_name"] == "Python (cvdl course)"
        assert Path(spec["argv"][0]).resolve().is_relative_to((ROOT / ".venv").resolve()) or \
            str(ROOT / ".venv") in spec["argv"][0]
        with urllib.request.urlopen(f"{base}/lab?token={token}", timeout=10) as r:
            assert r.status == 200 and b"JupyterLab" in r.read()
        with urllib.request.urlopen(f"{base}/api/contents?token={token}", timeout=10) as r:
            names = {item["name"] for item in json.load(r)["content"]}
        assert {"notebooks", "labs", "solutions"} <= names, names   # rooted at the course: ../labs/ links work
        for folder, first in (("notebooks", "00_welcome.ipynb"), ("labs", "01_convolution.ipynb")):
            with urllib.request.urlopen(f"{base}/api/contents/{folder}?token={token}", timeout=10) as r:
                assert first in {item["name"] for item in json.load(r)["content"]}, f"{folder}/{first}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
