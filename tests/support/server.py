"""A real ``uploader serve`` process for a test, and the rules every process a
test starts follows:

- its environment is clean: no ``UPLOADER_*`` variable of the developer's
  shell leaks in; only the settings the test gives (``{"section.key": value}``,
  the keys of config.yaml) become ``UPLOADER_<SECTION>_<KEY>``;
- its working folder is the test's own temp folder, so no config.yaml is
  picked up by accident;
- it dies with the test process: SIGKILL from the kernel (PR_SET_PDEATHSIG)
  when the test process dies without a teardown, and :meth:`ServerProcess.close`
  (the context manager, the ``start_server`` fixture) when it has one, even
  when the test failed or left the process SIGSTOPped.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping

from .api import BlockingApi
from .wait import wait_until

# What every test server gets unless its settings say otherwise: no fsync
# (tests about durability turn it on) and no expiry timer (tests sweep by hand).
DEFAULTS: dict[str, object] = {"storage.fsync": False, "expiry.enabled": False}
START_TIMEOUT = 30.0  # seconds for a process to answer /healthz
STOP_TIMEOUT = 15.0  # seconds SIGTERM gets before SIGKILL

_PR_SET_PDEATHSIG = 1
# Loaded here, in the parent: between fork and exec the child only calls it.
_libc = ctypes.CDLL(None, use_errno=True)
_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()
_live: set[ServerProcess] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(settings: Mapping[str, object] | None = None) -> dict[str, str]:
    """This process's environment without any ``UPLOADER_*`` variable, plus
    ``settings`` (``{"storage.fsync": True}``) as ``UPLOADER_STORAGE_FSYNC=true``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPLOADER_")}
    env["PYTHONUNBUFFERED"] = "1"  # log lines reach the file as they are written
    for key, value in (settings or {}).items():
        section, dot, name = key.partition(".")
        if not (section and dot and name):
            raise ValueError(f"setting {key!r}: expected 'section.key'")
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        env[f"UPLOADER_{section}_{name}".upper()] = text
    return env


def _die_with_parent(parent: int) -> Callable[[], None]:
    def preexec() -> None:  # in the child, between fork and exec
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    return preexec


def spawn(args: list[str], **popen: Any) -> subprocess.Popen:
    """``subprocess.Popen`` for a long-running helper process (a server) that
    must not outlive the tests. PR_SET_PDEATHSIG fires when the *thread* that
    forked the child ends, so every such child is forked by one thread that
    lives as long as the test process: a server restarted from a short-lived
    thread (the chaos test's driver) would otherwise be killed with it. Its
    own session keeps a Ctrl-C in the terminal for pytest, whose teardown
    then stops it."""
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawner")
    preexec = _die_with_parent(os.getpid())
    return _spawner.submit(subprocess.Popen, args, preexec_fn=preexec,
                           start_new_session=True, **popen).result()


def run_uploader(*args: str, cwd: Path, settings: Mapping[str, object] | None = None,
                 input: str | None = None, timeout: float = 120.0
                 ) -> subprocess.CompletedProcess[str]:
    """One ``uploader`` command (``cleanup``, ``migrate``, ``hash-token``, ...)
    run to its end, with the same clean environment as a server; ``cwd`` is a
    folder without config.yaml."""
    return subprocess.run([sys.executable, "-m", "uploader", *args], cwd=cwd,
                          env=server_env(settings), input=input, capture_output=True,
                          text=True, timeout=timeout,
                          preexec_fn=_die_with_parent(os.getpid()))


def stop_all() -> None:
    """Stop every server still running (the session's last safety net)."""
    for server in list(_live):
        server.close()


class ServerProcess(BlockingApi):
    """``python -m uploader serve`` on 127.0.0.1, a free port and its own
    data_dir (``folder/data`` unless ``storage.data_dir`` is set), with the
    blocking JSON client of :class:`~support.api.BlockingApi`.

    ``folder`` is the working folder (it must not hold a config.yaml) and
    keeps the log, ``<name>.log``, which one process after another appends to
    (so a restart keeps the earlier lines). :meth:`start` again after
    :meth:`stop` or :meth:`kill` is a restart on the same port with the same
    data."""

    def __init__(self, folder: Path, settings: Mapping[str, object] | None = None, *,
                 name: str = "server", port: int | None = None, config: Path | None = None,
                 python: str | os.PathLike[str] = sys.executable) -> None:
        """``config``: a file given with ``--config``; ``python``: the
        interpreter that runs ``-m uploader`` (another venv's, e.g. one holding
        only the built wheel)."""
        if (folder / "config.yaml").exists():
            raise ValueError(f"{folder} holds a config.yaml: the server would read it")
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.name = folder, name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings: dict[str, object] = {
            **DEFAULTS, "storage.data_dir": str(folder / "data"), **(settings or {})}
        self.data_dir = Path(str(self.settings["storage.data_dir"]))
        self.log_path = folder / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.extra_args = ["--config", str(config)] if config is not None else []
        self.python = os.fspath(python)

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc else None
        return f"<{self.name} :{self.port} pid {pid}>"

    def __enter__(self) -> ServerProcess:
        if not self.running:
            try:
                self.start()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the process ---------------------------------------------------------

    @property
    def running(self) -> bool:
        """Started and not exited (a paused process is running)."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait: bool = True) -> ServerProcess:
        """Start the process; with ``wait``, return once /healthz answers 200.
        ``wait=False`` lets a test start several at once (then :meth:`wait_ready`)."""
        if self.running:
            raise RuntimeError(f"{self} is already running")
        with open(self.log_path, "ab") as log:
            self.proc = spawn([self.python, "-m", "uploader", "serve",
                               "--host", "127.0.0.1", "--port", str(self.port), *self.extra_args],
                              cwd=self.folder, env=server_env(self.settings),
                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        _live.add(self)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self} exited with {self.proc.returncode}:\n"
                                     f"{self.logs()[-3000:]}")
            try:
                return self.call("GET", "/healthz", timeout=2).code == 200
            except OSError:
                return False
        try:
            wait_until(healthy, f"{self} to answer /healthz", timeout)
        except AssertionError as exc:
            if "exited with" in str(exc):
                raise
            raise AssertionError(f"{exc}:\n{self.logs()[-3000:]}") from None

    def terminate(self) -> None:
        """Send SIGTERM (a graceful shutdown) and return at once; see :meth:`wait`."""
        self._signal(signal.SIGTERM)

    def wait(self, timeout: float = 60.0) -> int:
        """The exit code, once the process has exited."""
        assert self.proc is not None, f"{self} was never started"
        code = self.proc.wait(timeout)
        _live.discard(self)
        return code

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM (after SIGCONT: a paused process cannot act on it), then
        SIGKILL if it has not exited within ``timeout``; the exit code (None
        if it was never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.wait(timeout)

    def kill(self) -> int:
        """SIGKILL: a crash, as far as the server can tell; the exit code."""
        self._signal(signal.SIGKILL)
        return self.wait(STOP_TIMEOUT)

    def pause(self) -> None:
        """SIGSTOP: frozen mid-whatever (a stalled VM, a long GC pause)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def restart(self) -> ServerProcess:
        """Stop (if running), then start again: same port, same data, same settings."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop if running; safe to call at any time, any number of times."""
        self.stop()
        _live.discard(self)

    def _signal(self, signum: int) -> None:
        assert self.proc is not None, f"{self} was never started"
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    # -- its log -------------------------------------------------------------

    def logs(self) -> str:
        """Everything the process (and those before it in this folder under
        this name) wrote to stdout and stderr."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_lines(self) -> list[dict[str, Any]]:
        """Every log line parsed; with ``logging.format: json`` each line must
        be one JSON object (anything else fails here)."""
        return [json.loads(line) for line in self.logs().splitlines()]

    def count_log(self, pattern: str) -> int:
        return len(re.findall(pattern, self.logs()))

    def wait_log(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first match of ``pattern`` in the log, once there is one."""
        return wait_until(lambda: re.search(pattern, self.logs()),
                          f"{pattern!r} in the log of {self}", timeout)
