"""Show a real model's drift alert travel through Tocsin, end to end, in a minute.

Two screening models serve predictions and report to Tocsin over DogStatsD; one
of them meets a population it was not trained on half-way through. Tocsin turns
the drift into an alert, notifies a webhook, resolves the alert when the
traffic returns to normal, and exports every metric to Datadog. A local
receiver stands in for both the webhook destination and Datadog.

Everything lands in ./demo-run/, recreated on every run: the configuration the
daemon ran, its JSON log, its SQLite database and every request the receiver
got. Exits non-zero when the drifted model's trigger and resolve did not both
arrive.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from receiver import Receiver, number

EXAMPLES = Path(__file__).resolve().parent
REPO = EXAMPLES.parent
#: Written into the run directory so a rerun only ever deletes its own.
MARKER = ".tocsin-demo"
#: The key the daemon sends to the stand-in; a DD_API_KEY of the user's is never used.
DEMO_API_KEY = "demo-key-0000000000000000000000"
SOCKET_DEADLINE = 20.0
RESOLVE_DEADLINE = 20.0
STOP_DEADLINE = 20.0


class DemoError(Exception):
    """Raised when the demo cannot go on; the message says what to look at."""


@dataclass(frozen=True)
class Model:
    """One feeder: which model it serves and whether its traffic drifts."""

    name: str
    seed: int
    drifts: bool


MODELS = (
    Model("tumour-screen-north", seed=7, drifts=True),
    Model("tumour-screen-south", seed=2, drifts=False),
)
DRIFTED = MODELS[0].name


class Console:
    """Print lines stamped with the seconds since the demo started."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, who: str, line: str) -> None:
        print(f"{self.elapsed():6.1f}s  {who:<20} {line}", flush=True)


def fresh_run_dir(path: Path) -> Path:
    """Empty ``path`` if an earlier demo made it, and return it, absolute.

    :raises DemoError: if ``path`` holds files the demo did not write.
    """
    path = path.resolve()
    if path.exists():
        if not (path / MARKER).exists() and any(path.iterdir()):
            raise DemoError(f"{path} exists and was not made by the demo; move it")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by examples/demo.py; deleted on the next run\n")

    return path


def write_config(run_dir: Path, receiver_port: int) -> tuple[Path, dict]:
    """Fill the receiver's port into demo.toml; return the file and its content."""
    text = (EXAMPLES / "demo.toml").read_text()
    text = text.replace("${RECEIVER_PORT}", str(receiver_port))
    path = run_dir / "tocsin.toml"
    path.write_text(text)

    return path, tomllib.loads(text)


def log_entry(raw: str) -> dict | None:
    """Return one line of the daemon's log as a dict, or None if it is not JSON."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def log_line(raw: str, width: int = 160) -> str:
    """Render one line of the daemon's log as a short readable line."""
    entry = log_entry(raw)
    if entry is None:
        return raw.rstrip()
    fixed = ("time", "level", "logger", "message", "exception")
    context = " ".join(f"{k}={v}" for k, v in entry.items() if k not in fixed)
    line = f"{entry.get('level', '?'):<7} {entry.get('message', '')}  {context}"
    return line if len(line) <= width else line[: width - 1] + "…"


def log_excerpt(path: Path, tail: int = 5, notable: int = 10) -> list[str]:
    """Return the log's warnings and errors, then its last lines."""
    if not path.exists():
        return [f"({path} was not written)"]
    lines = path.read_text(errors="replace").splitlines()
    loud = [
        line
        for line in lines[:-tail]
        if (log_entry(line) or {}).get("level") in ("warning", "error", "critical")
    ]
    picked = loud[-notable:] + lines[-tail:]

    return [log_line(line) for line in picked]


def table_counts(database: Path) -> str:
    """Count the rows of each table, once the daemon has exited.

    The database is in WAL mode: a ``mode=ro`` connection creates ``-wal`` and
    ``-shm`` files it may not remove, so they would outlive the demo. The last
    read-write connection to close checkpoints the WAL into the database and
    deletes both, so it is opened read-write (``mode=rw`` never creates it)
    with ``query_only``, which keeps the read-only intent: SQLite refuses any
    write made through it.
    """
    if not database.exists():
        return "not created"
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{database}?mode=rw", uri=True)
        ) as db:
            db.execute("PRAGMA query_only = ON")
            names = [
                row[0]
                for row in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]
            counts = []
            for name in names:
                quoted = name.replace('"', '""')
                query = f'SELECT count(*) FROM "{quoted}"'
                counts.append(f"{name} {db.execute(query).fetchone()[0]}")
    except sqlite3.Error as error:
        return f"unreadable ({error})"

    return "rows: " + ", ".join(counts) if counts else "no tables"


def drift_round_trip(notifications: list[dict]) -> bool:
    """Whether the drifted model's trigger arrived and then its resolve."""
    events = [
        n["seen"]["event"] for n in notifications if n["seen"]["model"] == DRIFTED
    ]
    return "trigger" in events and "resolve" in events[events.index("trigger") :]


class Demo:
    """The run: a receiver, the daemon, the feeders, then the summary."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.console = Console()
        self.run_dir = fresh_run_dir(Path(args.run_dir))
        self.log_path = self.run_dir / "tocsin.log"
        self.receiver = Receiver(
            api_key=DEMO_API_KEY,
            record=self.run_dir / "received.jsonl",
            out=lambda line: self.console.say("receiver", line),
        )
        self.daemon: asyncio.subprocess.Process | None = None
        self.feeders: list[asyncio.subprocess.Process] = []

    def say(self, line: str) -> None:
        self.console.say("demo", line)

    async def run(self) -> list[str]:
        """Run every step; return what the run failed to show, if anything."""
        # Stopped from outside, the demo still stops the processes it started.
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGTERM, asyncio.current_task().cancel
        )
        port = await self.receiver.start()
        self.say(f"receiver (webhook + Datadog stand-in) on 127.0.0.1:{port}")
        try:
            config_path, config = write_config(self.run_dir, port)
            await self._start_daemon(config_path)
            socket = config["ingest"]["unix_dgram"]
            await self._wait_for_socket(self.run_dir / socket)
            await self._feed(socket)

            if not drift_round_trip(self.receiver.notifications):
                self.say("feeders done; waiting for the resolve notification")
                await self.receiver.wait_for(
                    lambda: drift_round_trip(self.receiver.notifications),
                    RESOLVE_DEADLINE,
                )
        finally:
            await self._stop_feeders()
            await self._stop_daemon()
            await self.receiver.stop()
        self._summarize(config)

        return self.shortfalls()

    def shortfalls(self) -> list[str]:
        """Return what the demo promised to show and did not."""
        missing = []
        if not drift_round_trip(self.receiver.notifications):
            missing.append(
                f"the trigger and resolve notifications of {DRIFTED} did not both "
                "arrive at the webhook"
            )
        if not self.receiver.datadog_requests:
            missing.append("no Datadog export arrived")
        return missing

    async def _start_daemon(self, config_path: Path) -> None:
        env = dict(os.environ)
        env["DD_API_KEY"] = DEMO_API_KEY
        env["TOCSIN_DEMO_WEBHOOK_URL"] = f"{self.receiver.url}/hooks/ml-oncall"
        # The daemon runs inside the run directory, so find the package by path
        # too, in case it is not installed in this interpreter.
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO), env.get("PYTHONPATH")])
        )
        with self.log_path.open("wb") as log:
            self.daemon = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tocsin",
                "run",
                "--config",
                config_path.name,
                cwd=self.run_dir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self.say(f"started tocsin (pid {self.daemon.pid}), logging to {self.log_path}")

    async def _wait_for_socket(self, socket: Path) -> None:
        deadline = time.monotonic() + SOCKET_DEADLINE
        while not socket.exists():
            if self.daemon.returncode is not None:
                raise DemoError(
                    f"tocsin exited with status {self.daemon.returncode} before "
                    f"it listened on {socket.name}"
                )
            if time.monotonic() > deadline:
                raise DemoError(
                    f"tocsin did not create {socket} within {SOCKET_DEADLINE:g}s"
                )
            # A short poll: the daemon offers no readiness signal to wait on here.
            await asyncio.sleep(0.1)
        self.say(f"tocsin listens on {socket.name}; starting the models")

    async def _feed(self, socket: str) -> None:
        args = self.args
        for model in MODELS:
            drift = (
                [args.drift_start, args.drift_end]
                if model.drifts
                else [args.duration, args.duration]
            )
            command = [
                sys.executable,
                "-u",
                str(EXAMPLES / "model_feeder.py"),
                f"--socket={socket}",
                f"--model-name={model.name}",
                f"--seed={model.seed}",
                f"--duration={args.duration}",
                f"--drift-start={drift[0]}",
                f"--drift-end={drift[1]}",
            ]
            self.feeders.append(
                await asyncio.create_subprocess_exec(
                    *command,
                    cwd=self.run_dir,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
            )
        echoes = asyncio.gather(
            *(self._echo(m.name, f) for m, f in zip(MODELS, self.feeders, strict=True))
        )
        daemon_exit = asyncio.ensure_future(self.daemon.wait())
        await asyncio.wait({echoes, daemon_exit}, return_when=asyncio.FIRST_COMPLETED)
        # A daemon gone mid-run would leave the feeders failing on every send.
        if not echoes.done():
            echoes.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await echoes
            raise DemoError(
                f"tocsin exited early, with status {self.daemon.returncode}"
            )
        daemon_exit.cancel()

        for model, feeder in zip(MODELS, self.feeders, strict=True):
            if feeder.returncode != 0:
                raise DemoError(
                    f"the {model.name} feeder exited with {feeder.returncode}"
                )

    async def _echo(self, name: str, feeder: asyncio.subprocess.Process) -> None:
        async for line in feeder.stdout:
            self.console.say(name, line.decode(errors="replace").rstrip())
        await feeder.wait()

    async def _stop_feeders(self) -> None:
        for feeder in self.feeders:
            if feeder.returncode is None:
                feeder.terminate()
                await feeder.wait()

    async def _stop_daemon(self) -> None:
        daemon = self.daemon
        if daemon is None or daemon.returncode is not None:
            return
        # SIGTERM asks for a clean stop: the daemon flushes its last Datadog batch.
        self.say("stopping tocsin (SIGTERM)")
        daemon.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(daemon.wait(), STOP_DEADLINE)
        except TimeoutError:
            self.say(f"tocsin did not stop within {STOP_DEADLINE:g}s; killing it")
            daemon.kill()
            await daemon.wait()
        self.say(f"tocsin exited with status {daemon.returncode}")

    def _summarize(self, config: dict) -> None:
        here = Path.cwd()

        def show(path: Path) -> str:
            return (
                str(path.relative_to(here)) if path.is_relative_to(here) else str(path)
            )

        daemon_config = config.get("daemon", {})
        database = Path(
            daemon_config.get("database")
            or Path(daemon_config.get("state_dir", "./tocsin-state")) / "tocsin.db"
        )
        database = self.run_dir / database
        notifications = self.receiver.notifications
        requests = self.receiver.datadog_requests
        metrics = sorted(
            {s.get("metric") for r in requests for s in r["payload"]["series"]}
        )

        print("\n" + "─" * 30 + " summary " + "─" * 30)
        print(f"webhook notifications: {len(notifications)}")
        for note in notifications:
            seen = note["seen"]
            at = note["received_at"] - time.time() + self.console.elapsed()
            print(
                f"  {at:6.1f}s  {str(seen['event']):<8} {seen['rule']}"
                f"  model={seen['model']}  value={number(seen['value'])}"
                f"  threshold={number(seen['threshold'])}"
            )
        quiet = [m.name for m in MODELS if not m.drifts]
        if any(n["seen"]["model"] in quiet for n in notifications):
            print(f"  note: the steady model ({', '.join(quiet)}) was alerted on too")
        print(
            f"datadog exports: {len(requests)} requests, "
            f"{sum(r['series'] for r in requests)} series, "
            f"{sum(r['wire_bytes'] for r in requests)} B on the wire / "
            f"{sum(r['raw_bytes'] for r in requests)} B raw"
        )
        print(f"  metrics: {', '.join(map(str, metrics)) or 'none'}")
        print(f"database: {show(database)} ({table_counts(database)})")
        print(
            f"  inspect: sqlite3 -header -column {show(database)} "
            "'SELECT * FROM alerts; SELECT * FROM transitions;'"
        )
        print(f"daemon log: {show(self.log_path)} (one JSON object per line)")
        for line in log_excerpt(self.log_path):
            print(f"  {line}")
        print(f"received requests: {show(self.run_dir / 'received.jsonl')}")
        print(f"total time: {self.console.elapsed():.1f}s")


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="demo-run")
    parser.add_argument("--duration", type=float, default=51.0, help="seconds")
    parser.add_argument("--drift-start", type=float, default=15.0, help="seconds")
    parser.add_argument("--drift-end", type=float, default=30.0, help="seconds")
    args = parser.parse_args(argv)

    try:
        demo = Demo(args)
        shortfalls = asyncio.run(demo.run())
    except DemoError as error:
        print(f"\ndemo failed: {error}", file=sys.stderr)
        log = Path(args.run_dir) / "tocsin.log"
        if log.exists():
            print(f"last lines of {log}:", file=sys.stderr)
            for line in log.read_text(errors="replace").splitlines()[-15:]:
                print(f"  {log_line(line)}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ndemo interrupted", file=sys.stderr)
        return 130

    if shortfalls:
        for shortfall in shortfalls:
            print(f"\ndemo failed: {shortfall}", file=sys.stderr)
        print("see the daemon log above", file=sys.stderr)
        return 1
    print(f"\ndemo passed: {DRIFTED} drifted, was alerted on, and recovered.")

    return 0


if __name__ == "__main__":
    sys.exit(main())
