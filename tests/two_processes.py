"""`training.train` in two processes on the CPU (torchrun, gloo), for the tests of several processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_train(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node 2 -m training.train ARGS`; skips the test where torchrun cannot
    start or finish on this machine (a busy port, a slow machine), never where training fails."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "training.train", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.skip(f"torchrun did not finish in {timeout} s on this machine")
    if proc.returncode != 0 and ("EADDRINUSE" in proc.stderr or "rendezvous" in proc.stderr.lower()):
        pytest.skip(f"torchrun could not start: {proc.stderr.strip().splitlines()[-1]}")
    return proc
