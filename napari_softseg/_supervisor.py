"""Supervise a ``softseg train ... --json-progress`` child process from the viewer (DESIGN.md 3).

Three parts, so the process handling is testable without Qt:

:class:`TrainingProcess`
    Starts ``python -m softseg train ... --json-progress`` with :class:`subprocess.Popen`, parses
    its stdout JSON lines into :mod:`softseg.events` objects, keeps the tail of its stderr (for the
    child's last error line), asks it to stop (SIGINT on POSIX, CTRL_BREAK on Windows) and kills
    it (its whole process group) when it does not stop within a timeout. It always reaps the
    child, so no zombie is left behind, and an ``atexit`` hook stops children still running when
    the interpreter exits.

:func:`supervise`
    A napari ``thread_worker`` generator over a :class:`TrainingProcess`: it yields each parsed
    event (handled in the main thread by the widget) and returns a :class:`Outcome` when the child
    has exited.

Two helpers keep torch off the viewer's main thread (opening a dock must not freeze napari;
importing torch there took 5-10 s on the 2-core test machine):

:class:`DeviceProbe`
    Asks a short-lived child interpreter which compute devices torch sees
    (:func:`softseg.device.available_devices`); the answer is cached for the napari process
    (:func:`device_probe`).

:class:`Prestarter`
    Starts, ahead of time and at background priority, one interpreter that imports torch and the
    trainer and then waits for a command line on its stdin. :class:`TrainingProcess` hands a run
    to it when one is waiting, so a click on *Train* does not wait for Python and torch to start
    (the measured share is in ``benchmarks/train_start.py``). The run is exactly what
    ``python -m softseg train ...`` would do: the waiting interpreter runs the same module with
    the same arguments (:func:`runpy.run_module`).

Nothing here touches layers; the Train widget does that in its main-thread handlers.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from softseg import events as ev

__all__ = [
    "DEFAULT_NICE",
    "DEFAULT_STOP_TIMEOUT_S",
    "PRESTART_MODULES",
    "DeviceProbe",
    "Outcome",
    "Prestarter",
    "TrainingProcess",
    "device_probe",
    "is_alive",
    "supervise",
    "train_argv",
]

#: Seconds a child may take to stop and save after a cancel request before it is killed.
DEFAULT_STOP_TIMEOUT_S = 30.0
#: Nice value of the child (POSIX; "below normal" priority class on Windows): background
#: training yields the CPU to the viewer's event loop, so the GUI stays responsive.
DEFAULT_NICE = 10

_LIVE: weakref.WeakSet[TrainingProcess] = weakref.WeakSet()


@dataclass(frozen=True)
class Outcome:
    """How a supervised training run ended.

    Attributes
    ----------
    returncode : int
        The child's exit status (negative = killed by that signal on POSIX).
    done : softseg.events.DoneEvent or None
        The final ``done`` event, when the child sent one.
    error : softseg.events.ErrorEvent or None
        The last ``error`` event, when the child sent one.
    error_line : str or None
        One line saying what went wrong (the error event's message, else the child's last
        ``softseg train: error: ...`` line, else its last stderr line), ``None`` on success.
    cancelled : bool
        ``True`` when :meth:`TrainingProcess.request_stop` was called.
    killed : bool
        ``True`` when the child did not stop in time and was killed.
    checkpoint : str or None
        The last resumable checkpoint the child reported.
    """

    returncode: int
    done: ev.DoneEvent | None
    error: ev.ErrorEvent | None
    error_line: str | None
    cancelled: bool
    killed: bool
    checkpoint: str | None

    @property
    def ok(self) -> bool:
        """The child exited cleanly and wrote its model."""
        return self.returncode == 0 and self.error is None and self.done is not None

    @property
    def stopped(self) -> bool:
        """The child stopped on request and saved its checkpoint (``softseg train`` then exits
        with 128 + the signal number, :mod:`softseg.cli`)."""
        return (self.cancelled and not self.killed and self.error is None and self.done is not None
                and self.done.reason == "cancelled")


def train_argv(
    dataset: str | os.PathLike,
    *,
    config: str | os.PathLike,
    out: str | os.PathLike,
    resume: bool = False,
    overwrite: bool = False,
    init: str | os.PathLike | None = None,
    allow_preannotated: bool = False,
    python: str | None = None,
) -> list[str]:
    """The command line of a supervised training run.

    The settings cross the process boundary once, typed: as a :class:`softseg.config.TrainConfig`
    JSON file (``TrainConfig.to_json_file``) that the child reads with ``--config`` and validates
    with the same schema; nothing else is turned into argv strings.

    Parameters
    ----------
    dataset : path
        Dataset folder (DESIGN.md layout).
    config : path
        The run's configuration as JSON.
    out : path
        Model file to write (``.safetensors``).
    resume, overwrite : bool
        ``--resume`` / ``--overwrite``.
    init : path, optional
        Fine-tune: start from this model file's weights and settings (``--init``).
    allow_preannotated : bool
        Accept rater maps a model made that nobody corrected (``--allow-preannotated``).
    python : str, optional
        Interpreter; default :data:`sys.executable` (the viewer's environment).

    Returns
    -------
    list of str
        ``[python, "-m", "softseg", "train", DATASET, "--config", CONFIG, "--out", OUT, ...,
        "--json-progress"]``.
    """
    argv = [python or sys.executable, "-m", "softseg", "train", os.fspath(dataset),
            "--config", os.fspath(config), "--out", os.fspath(out)]
    if resume:
        argv.append("--resume")
    if overwrite:
        argv.append("--overwrite")
    if init is not None:
        argv += ["--init", os.fspath(init)]
    if allow_preannotated:
        argv.append("--allow-preannotated")
    argv.append("--json-progress")
    return argv


class TrainingProcess:
    """One child process emitting :mod:`softseg.events` JSON lines on stdout.

    Parameters
    ----------
    argv : sequence of str
        Command line (see :func:`train_argv`). Nothing runs until :meth:`start`.
    env : dict, optional
        Extra environment variables for the child (added to ``os.environ``).
    cwd : path, optional
        Working directory of the child.
    stderr_lines : int
        How many trailing stderr lines to keep.
    nice : int or None
        Run the child this much below the viewer's own scheduling priority (``None``: same).
    prestarter : Prestarter, optional
        Hand the run to its waiting interpreter when it has one (see :meth:`start`).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        stderr_lines: int = 200,
        nice: int | None = DEFAULT_NICE,
        prestarter: Prestarter | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self._prestarter = prestarter
        #: The run went to an interpreter started ahead of time (:class:`Prestarter`).
        self.prestarted = False
        self._env = dict(env or {})
        self._cwd = cwd
        self._nice = nice
        self._popen: subprocess.Popen[str] | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=stderr_lines)
        self._stderr_thread: threading.Thread | None = None
        self._stop_requested = threading.Event()
        self._killed = False
        self._lock = threading.Lock()
        self.last_checkpoint: str | None = None
        self.last_error: ev.ErrorEvent | None = None
        self.done: ev.DoneEvent | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The child's process id (``None`` before :meth:`start`)."""
        return None if self._popen is None else self._popen.pid

    @property
    def returncode(self) -> int | None:
        """Exit status once reaped, else ``None``."""
        return None if self._popen is None else self._popen.poll()

    @property
    def running(self) -> bool:
        """Started and not yet exited."""
        return self._popen is not None and self._popen.poll() is None

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested.is_set()

    @property
    def stderr_tail(self) -> list[str]:
        """The last stderr lines of the child (newest last)."""
        with self._lock:
            return list(self._stderr_tail)

    def start(self) -> TrainingProcess:
        """Start the child (once). Returns ``self``.

        With a :class:`Prestarter` that has an interpreter waiting (and no extra ``env``), the run
        is handed to that interpreter instead of starting a new one (:attr:`prestarted`).
        """
        if self._popen is not None:
            raise RuntimeError("this training process was already started")
        popen = None
        if self._prestarter is not None and not self._env:
            popen = self._prestarter.hand_over(self.argv, cwd=self._cwd)
        self.prestarted = popen is not None
        if popen is None:
            popen = _spawn(self.argv, env=self._env, cwd=self._cwd, nice=self._nice)
        self._popen = popen
        _LIVE.add(self)
        self._stderr_thread = threading.Thread(
            target=self._drain_stderr, name=f"softseg-stderr-{self._popen.pid}", daemon=True
        )
        self._stderr_thread.start()
        return self

    def _drain_stderr(self) -> None:
        assert self._popen is not None and self._popen.stderr is not None
        for line in self._popen.stderr:
            line = line.rstrip("\r\n")
            if line.strip():
                with self._lock:
                    self._stderr_tail.append(line)
        self._popen.stderr.close()

    def events(self) -> Iterator[ev.Event]:
        """Parsed events from the child's stdout until it closes (blocking).

        Lines that are not events (a library's stray print) are skipped; a malformed event of
        a known type is skipped too (the schema says consumers must be lenient).
        """
        if self._popen is None or self._popen.stdout is None:
            raise RuntimeError("start() the training process first")
        for line in self._popen.stdout:
            try:
                event = ev.from_json(line)
            except ValueError:
                continue
            if event is None:
                continue
            if isinstance(event, ev.CheckpointEvent):
                self.last_checkpoint = event.path
            elif isinstance(event, ev.ErrorEvent):
                self.last_error = event
                if event.checkpoint:
                    self.last_checkpoint = event.checkpoint
            elif isinstance(event, ev.DoneEvent):
                self.done = event
                if event.checkpoint:
                    self.last_checkpoint = event.checkpoint
            yield event
        self._popen.stdout.close()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to exit and reap it; returns its exit status."""
        if self._popen is None:
            raise RuntimeError("start() the training process first")
        code = self._popen.wait(timeout)
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=5.0)
        return code

    # -- stopping -------------------------------------------------------------------------------
    def request_stop(self) -> bool:
        """Ask the child to stop at its next step and save a checkpoint (non-blocking).

        Returns ``False`` when the child is not running.
        """
        self._stop_requested.set()
        popen = self._popen
        if popen is None or popen.poll() is not None:
            return False
        try:
            if sys.platform == "win32":
                os.kill(popen.pid, signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
            else:
                os.kill(popen.pid, signal.SIGINT)
        except (ProcessLookupError, OSError):
            return False
        return True

    def kill(self) -> None:
        """Kill the child (and its process group on POSIX) now and reap it."""
        popen = self._popen
        if popen is None or popen.poll() is not None:
            return
        self._killed = True
        _kill_group(popen)

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S, *, block: bool = False) -> None:
        """Ask the child to stop and save; kill it if it is still running after ``timeout``.

        Parameters
        ----------
        timeout : float
            Seconds the child gets to save its checkpoint and exit.
        block : bool
            Wait here until the child is gone (used when the viewer closes). Otherwise a
            daemon thread enforces the timeout and the caller returns at once.
        """
        if not self.request_stop():
            return

        def enforce() -> None:
            try:
                self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

        if block:
            enforce()
        else:
            threading.Thread(target=enforce, name="softseg-stop", daemon=True).start()

    @property
    def killed(self) -> bool:
        """The child had to be killed."""
        return self._killed

    def outcome(self) -> Outcome:
        """Summary once the child has exited (reaps it if needed)."""
        code = self.wait()
        return Outcome(
            returncode=code,
            done=self.done,
            error=self.last_error,
            error_line=self._error_line(code),
            cancelled=self.stop_requested,
            killed=self._killed,
            checkpoint=self.last_checkpoint,
        )

    def _error_line(self, code: int) -> str | None:
        if self.last_error is not None:
            return self.last_error.message
        if code == 0 and self.done is not None:
            return None
        if self.stop_requested and self.done is not None and self.done.reason == "cancelled":
            return None  # stopped on request, checkpoint saved (exit 128 + signal by convention)
        if self._killed:
            return "training did not stop in time and was killed; the last checkpoint is kept"
        tail = self.stderr_tail
        for line in reversed(tail):
            if line.startswith("softseg ") and (": error:" in line or ": internal error:" in line):
                return line.strip()
        if tail:
            return tail[-1].strip()
        if code == 0:
            if self.stop_requested:
                return None
            return "training ended without reporting a result"
        return f"training exited with status {code} and no message"


def _spawn(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    nice: int | None = DEFAULT_NICE,
    stdin: int = subprocess.DEVNULL,
) -> subprocess.Popen[str]:
    """Start a child with text pipes for stdout/stderr, in its own process group, niced."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PYTHONUNBUFFERED"] = "1"
    full_env.setdefault("PYTHONIOENCODING", "utf-8")
    kwargs: dict[str, object] = {}
    if sys.platform == "win32":
        # A new process group receives CTRL_BREAK_EVENT without disturbing the viewer.
        flags = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        if nice:
            flags |= subprocess.BELOW_NORMAL_PRIORITY_CLASS  # type: ignore[attr-defined]
        kwargs["creationflags"] = flags
    else:
        # Own session = own process group: a terminal Ctrl-C in the viewer's shell does not
        # reach it, and a hard kill takes data-loader workers with it.
        kwargs["start_new_session"] = True
    popen = subprocess.Popen(  # noqa: S603 - argv is built by train_argv, no shell
        [str(a) for a in argv],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        cwd=cwd,
        env=full_env,
        **kwargs,  # type: ignore[arg-type]
    )
    if nice and sys.platform != "win32":
        # Relative to the viewer: right after the fork, before the child's interpreter starts
        # its threads (they inherit it).
        try:
            own = os.getpriority(os.PRIO_PROCESS, 0)
            os.setpriority(os.PRIO_PROCESS, popen.pid, min(own + int(nice), 19))
        except OSError:
            pass
    return popen


def _kill_group(popen: subprocess.Popen[str]) -> None:
    """Kill a child and its process group now, and reap it."""
    if popen.poll() is not None:
        return
    try:
        if sys.platform == "win32":
            popen.kill()
        else:
            os.killpg(popen.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        try:
            popen.kill()
        except OSError:
            pass
    popen.wait()


#: What a :class:`Prestarter`'s interpreter imports while it waits: torch, torch._dynamo (which
#: torch's optimisers import on first use, ~40 % of torch's own import time) and the trainer.
PRESTART_MODULES: tuple[str, ...] = (
    "torch",
    "torch._dynamo",
    "softseg.cli",
    "softseg.cli.train",
    "softseg.training",
)

#: The waiting interpreter: import the modules (argv[1], JSON), read one job line from stdin
#: ({"argv": [...] after the interpreter, "cwd": ...}), then run it as `python ARGV` would.
_PRESTART_CODE = """\
import json, os, runpy, sys
for _name in json.loads(sys.argv[1]):
    try:
        __import__(_name)
    except Exception:
        pass  # the run itself reports what is missing
_line = sys.stdin.readline()
if not _line.strip():
    sys.exit(0)
_job = json.loads(_line)
if _job.get("cwd"):
    os.chdir(_job["cwd"])
_args = list(_job["argv"])
if _args[0] == "-m":
    sys.argv = [_args[1], *_args[2:]]
    runpy.run_module(_args[1], run_name="__main__", alter_sys=True)
else:
    sys.argv = _args
    runpy.run_path(_args[0], run_name="__main__")
"""


class Prestarter:
    """One interpreter started ahead of time, waiting for the next run's command line.

    The interpreter imports :data:`PRESTART_MODULES` at background priority while the user
    fills in the form; :meth:`hand_over` then gives it the run's argv (``[python, "-m", module,
    ...]`` or ``[python, script, ...]``), which it runs exactly as a new ``python`` would
    (:func:`runpy.run_module` / :func:`runpy.run_path` with that ``sys.argv``). A waiting
    interpreter whose parent dies reads end-of-file and exits; :meth:`close` (and interpreter
    exit) kills it.

    Parameters
    ----------
    modules : sequence of str
        Modules to import while waiting (import errors are ignored: the run reports them).
    python : str, optional
        Interpreter; default :data:`sys.executable`. Only runs for this interpreter are taken.
    nice : int or None
        Scheduling priority below the viewer's, as for :class:`TrainingProcess`.
    """

    def __init__(
        self,
        modules: Sequence[str] = PRESTART_MODULES,
        *,
        python: str | None = None,
        nice: int | None = DEFAULT_NICE,
    ) -> None:
        self.modules = tuple(modules)
        self.python = python or sys.executable
        self.nice = nice
        self._popen: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        #: Runs handed over so far.
        self.handed_over = 0
        _PRESTARTERS.add(self)

    @property
    def waiting(self) -> bool:
        """An interpreter is started and waiting for a run."""
        with self._lock:
            return self._popen is not None and self._popen.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the waiting interpreter, ``None`` when none waits."""
        with self._lock:
            return None if self._popen is None else self._popen.pid

    def start(self) -> Prestarter:
        """Start a waiting interpreter unless one is already waiting. Returns ``self``."""
        with self._lock:
            if self._popen is not None and self._popen.poll() is None:
                return self
            if self._popen is not None:
                self._popen.wait()
            self._popen = _spawn(
                [self.python, "-c", _PRESTART_CODE, json.dumps(list(self.modules))],
                nice=self.nice, stdin=subprocess.PIPE,
            )
        return self

    def hand_over(
        self, argv: Sequence[str], *, cwd: str | os.PathLike | None = None
    ) -> subprocess.Popen[str] | None:
        """Give ``argv`` to the waiting interpreter; its ``Popen``, or ``None`` when none waits
        (or ``argv`` is for another interpreter). The caller owns the returned process."""
        argv = [str(a) for a in argv]
        if len(argv) < 2 or argv[0] != self.python:
            return None
        with self._lock:
            popen, self._popen = self._popen, None
        if popen is None or popen.poll() is not None:
            if popen is not None:
                popen.wait()
            return None
        job = {"argv": argv[1:], "cwd": None if cwd is None else os.fspath(cwd)}
        try:
            assert popen.stdin is not None
            popen.stdin.write(json.dumps(job) + "\n")
            popen.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            _kill_group(popen)
            return None
        self.handed_over += 1
        return popen

    def close(self) -> None:
        """Kill the waiting interpreter (nothing to save: it has not started a run)."""
        with self._lock:
            popen, self._popen = self._popen, None
        if popen is not None:
            if popen.stdin is not None:
                try:
                    popen.stdin.close()
                except OSError:
                    pass
            _kill_group(popen)


_PRESTARTERS: weakref.WeakSet[Prestarter] = weakref.WeakSet()

#: Asked by :class:`DeviceProbe`'s child (one JSON line on stdout).
_PROBE_CODE = "import json; from softseg.device import available_devices; print(json.dumps(available_devices()))"


class DeviceProbe:
    """The compute devices torch can use here, found in a child interpreter.

    :func:`softseg.device.available_devices` imports torch; a dock that called it on napari's
    main thread froze the viewer for seconds. The probe runs it in a child process (a background
    thread waits for it), so the caller polls :attr:`devices` (``None`` while probing). When
    torch is already imported in this process, the answer is immediate.

    Parameters
    ----------
    python : str, optional
        Interpreter; default :data:`sys.executable`.
    timeout : float
        Seconds before the probe gives up and reports ``["cpu"]`` with :attr:`error` set.
    """

    def __init__(self, *, python: str | None = None, timeout: float = 180.0) -> None:
        self.python = python or sys.executable
        self.timeout = float(timeout)
        #: Devices, best first (``"cuda:0"``, ..., ``"mps"``, ``"cpu"``); ``None`` while probing.
        self.devices: list[str] | None = None
        #: Why the probe fell back to ``["cpu"]`` (one line), else ``None``.
        self.error: str | None = None
        #: Seconds the probe took.
        self.seconds: float | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def start(self) -> DeviceProbe:
        """Start probing (once). Returns ``self``."""
        if self._thread is not None or self.done:
            return self
        if "torch" in sys.modules and self.python == sys.executable:  # already paid for here
            from softseg.device import available_devices

            self._finish(available_devices(), None, 0.0)
            return self
        self._thread = threading.Thread(target=self._run, name="softseg-device-probe", daemon=True)
        self._thread.start()
        return self

    def _finish(self, devices: list[str], error: str | None, seconds: float) -> None:
        self.devices, self.error, self.seconds = devices, error, seconds
        self._done.set()

    def _run(self) -> None:
        import time

        t0 = time.perf_counter()
        popen = _spawn([self.python, "-c", _PROBE_CODE])
        try:
            out, err = popen.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(popen)
            self._finish(["cpu"], f"no answer from torch within {self.timeout:.0f} s",
                         time.perf_counter() - t0)
            return
        devices: list[str] | None = None
        for line in reversed(out.splitlines()):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, list) and all(isinstance(d, str) for d in value) and value:
                devices = value
                break
        if devices is None:
            tail = [ln.strip() for ln in err.splitlines() if ln.strip()]
            self._finish(["cpu"], tail[-1] if tail else f"exit status {popen.returncode}",
                         time.perf_counter() - t0)
            return
        self._finish(devices, None, time.perf_counter() - t0)

    def wait(self, timeout: float | None = None) -> list[str] | None:
        """Block until the probe has an answer (tests, scripts); the devices or ``None``."""
        self.start()
        self._done.wait(timeout)
        return self.devices


_SHARED_PROBE: DeviceProbe | None = None


def device_probe() -> DeviceProbe:
    """The napari process's one :class:`DeviceProbe` (started on first use, then cached)."""
    global _SHARED_PROBE
    if _SHARED_PROBE is None:
        _SHARED_PROBE = DeviceProbe()
    return _SHARED_PROBE.start()


def supervise(process: TrainingProcess) -> Iterator[ev.Event]:
    """Generator body of the supervising ``thread_worker``: start, yield events, reap.

    Runs in a worker thread. Yields every event; returns the :class:`Outcome`. If the worker is
    told to quit (napari activity dock), the child is asked to stop as well.

    Parameters
    ----------
    process : TrainingProcess
        Not yet started.
    """
    if not process.running and process.returncode is None:
        process.start()
    try:
        for event in process.events():
            yield event
    except GeneratorExit:  # worker.quit(): do not leave the child running
        process.stop()
        raise
    return process.outcome()


@atexit.register
def _stop_all_children() -> None:  # pragma: no cover - runs at interpreter exit
    for pre in list(_PRESTARTERS):
        pre.close()
    for proc in list(_LIVE):
        if proc.running:
            proc.stop(timeout=10.0, block=True)


def is_alive(pid: int) -> bool:
    """Whether a process with this id exists (and is not a reaped zombie) - for tests/docs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if sys.platform.startswith("linux"):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z"
    return True
