"""Start real ``switchboard serve`` processes for end-to-end tests (real sockets, real Redis).

``ServerProcess`` runs the CLI in a subprocess on a free port, with its own data dir (so, with
no Redis URL, its own embedded redis-server) or a given Redis URL (several nodes, one Redis).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.util import free_port

__all__ = ["BRIDGE_KEY", "CHAT_IDENTITY_SECRET", "ServerProcess", "write_config"]

BRIDGE_KEY = "test-bridge-key"
CHAT_IDENTITY_SECRET = "test-chat-identity-secret"  # what a site signs its visitors with


def write_config(
    path: Path, workspace: dict[str, Any], *, channels: list[str] | None = None
) -> Path:
    doc = {
        "workspace": workspace,
        "bridges": [
            {
                "id": "test-bridge",
                "workspace": workspace["id"],
                "channels": channels or ["chat", "email", "voice"],
                "key_env": "TEST_BRIDGE_KEY",
            },
            {
                "id": "chat-only",
                "workspace": workspace["id"],
                "channels": ["chat"],
                "key_env": "TEST_CHAT_BRIDGE_KEY",
            },
            {  # a second chat bridge, for one test alone: no connection of it is left over
                "id": "other-chat",
                "workspace": workspace["id"],
                "channels": ["chat"],
                "key_env": "TEST_OTHER_CHAT_BRIDGE_KEY",
            },
        ],
    }
    path.write_text(json.dumps(doc))
    return path


class ServerProcess:
    def __init__(
        self,
        data_dir: Path,
        config: Path | None = None,
        *,
        redis_url: str = "",
        adapters: str = "",
        env: dict[str, str] | None = None,
        command: Sequence[str] = ("serve",),
    ) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        args = [
            sys.executable,
            "-m",
            "router.cli",
            *command,
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
        ]
        if config is not None:
            args += ["--config", str(config)]
        if redis_url:
            args += ["--redis-url", redis_url]
        if adapters:
            args += ["--adapters", adapters]
        full_env = {
            **os.environ,
            "TEST_BRIDGE_KEY": BRIDGE_KEY,
            "TEST_CHAT_BRIDGE_KEY": "chat-only-key",
            "TEST_OTHER_CHAT_BRIDGE_KEY": "other-chat-key",
            "SWITCHBOARD_ALLOWED_ORIGINS": f"http://127.0.0.1:{self.port}",
            "SWITCHBOARD_SECRET": "test-secret",
            "SWITCHBOARD_CHAT_IDENTITY_SECRET": CHAT_IDENTITY_SECRET,
            "SWITCHBOARD_DRAIN_DELAY_S": "0.2",
            "SWITCHBOARD_LOG_JSON": "0",
            **(env or {}),
        }
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "server.log"
        self._log = open(self.log_path, "wb")  # closed in stop()
        self.proc = subprocess.Popen(args, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready: {self.log_path.read_text()[-3000:]}")

    def login(self, agent: str, password: str = "pw", workspace: str = "acme") -> dict[str, Any]:
        r = httpx.post(
            f"{self.url}/api/login",
            json={"workspace": workspace, "agent": agent, "password": password},
        )
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
