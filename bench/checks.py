"""Benchmark: sustained TCP health checks per second of the nanny engine on one core.

A helper process (pinned to another CPU when there is one) listens on 1,000 loopback
addresses 127.0.x.y and accepts and closes connections, so the server side is not counted
against the engine. The engine (pinned to CPU 0) checks one target per listener with the
full machinery: schedule, timeout, state machine, publication to a no-op subscriber. CPU
time of the engine's process comes from ``resource.getrusage`` (user + system).

Runs: a paced run asking for ``--rate`` checks/s (does it keep up, with how much CPU?),
then a saturated run (interval near zero) giving the most the engine can do per CPU-second.
Prints markdown; writes no files.

    .venv/bin/python bench/checks.py [--seconds 8] [--rate 10000] [--uvloop]
        [--targets 100000 --interval 10]   (also: that many targets, each every 10 s)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.nanny import CheckSpec, Engine, StateSpec


def listener_address(i: int) -> str:
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


def raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pin(cpu: int) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[cpu % len(cpus)]})


def serve(count: int, port: int) -> None:
    """Helper process: accept and close on ``count`` listeners until killed."""
    raise_nofile()
    pin(1)
    poller = select.epoll()
    listeners = {}
    for i in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listener_address(i), port))
        sock.listen(4096)
        sock.setblocking(False)
        listeners[sock.fileno()] = sock
        poller.register(sock.fileno(), select.EPOLLIN)
    print("ready", flush=True)
    while True:
        for fd, _ in poller.poll():
            sock = listeners[fd]
            while True:
                try:
                    conn, _ = sock.accept()
                except (BlockingIOError, ConnectionAbortedError):
                    break
                conn.close()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(count: int, port: int, interval: float, seconds: float, warmup: float,
                  listeners: int | None = None) -> dict:
    """``count`` targets (spread over ``listeners`` addresses, default one each) checked
    every ``interval`` seconds."""
    listeners = listeners or count
    engine = Engine(max_concurrency=1000, seed=1)
    transitions = 0

    def no_op(change) -> None:
        nonlocal transitions
        transitions += 1

    engine.subscribe(no_op)
    state = StateSpec(failures_to_down=1, reentry=0)
    engine.set_targets({
        ("bench", i): (
            CheckSpec(kind="tcp", host=listener_address(i % listeners), port=port,
                      timeout=1.0, interval=interval),
            state,
            None,
        )
        for i in range(count)
    })
    await engine.start()
    await asyncio.sleep(warmup)
    before, cpu0, wall0 = engine.stats(), cpu_seconds(), time.perf_counter()
    await asyncio.sleep(seconds)
    after, cpu1, wall1 = engine.stats(), cpu_seconds(), time.perf_counter()
    await engine.stop()
    checks = after.checks - before.checks
    cpu, wall = cpu1 - cpu0, wall1 - wall0
    ups = sum(1 for h in engine.snapshot().values() if h.state == "up")
    return {
        "asked": count / interval, "checks": checks, "failed": after.failed - before.failed,
        "per_wall": checks / wall, "per_cpu": checks / cpu, "cpu": cpu / wall,
        "mean_lag": after.mean_lag, "max_lag": after.max_lag, "up": ups,
        "transitions": transitions, "rss_mb": rss_mb(),
    }


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def row(name: str, loop_name: str, r: dict) -> str:
    asked = "max" if name == "saturated" else f"{r['asked']:,.0f}"
    return (
        f"| {name} | {loop_name} | {asked} | {r['per_wall']:,.0f} | "
        f"{r['per_cpu']:,.0f} | {r['cpu']:.2f} | {r['failed']} | {r['up']} | "
        f"{r['mean_lag'] * 1000:.1f} / {r['max_lag'] * 1000:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listeners", type=int, default=1000)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--rate", type=float, default=10000, help="checks/s of the paced run")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--uvloop", action="store_true", help="run the engine under uvloop")
    parser.add_argument("--targets", type=int, default=0,
                        help="also: this many targets over the listeners at --interval")
    parser.add_argument("--interval", type=float, default=10.0,
                        help="seconds between two checks of a target (with --targets)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.listeners, args.port)
        return
    raise_nofile()
    helper = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--listeners", str(args.listeners),
         "--port", str(args.port)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        if helper.stdout is None or helper.stdout.readline().strip() != "ready":
            sys.exit("bench: the listener helper did not start")
        pin(0)
        loop_name = "asyncio"
        runner = asyncio.run
        if args.uvloop:
            import uvloop  # type: ignore[import-not-found]

            runner, loop_name = uvloop.run, f"uvloop {uvloop.__version__}"
        paced = runner(measure(args.listeners, args.port, args.listeners / args.rate,
                               args.seconds, 1.5))
        saturated = runner(measure(args.listeners, args.port, 0.001, args.seconds, 1.5))
        many = (runner(measure(args.targets, args.port, args.interval, args.seconds,
                               args.interval, args.listeners)) if args.targets else None)
    finally:
        helper.kill()
        helper.wait()
    print(f"nanny engine, TCP connect checks, {args.listeners} loopback listeners, "
          f"{args.seconds:g}s per run, one core (CPU {sorted(os.sched_getaffinity(0))})\n")
    print("| run | loop | asked/s | checks/s (wall) | checks per CPU-s | CPU (cores) "
          "| failed | up | lag mean/max ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(row("paced", loop_name, paced))
    print(row("saturated", loop_name, saturated))
    if many is not None:
        print(row(f"{args.targets:,} targets every {args.interval:g} s", loop_name, many))
        print(f"\nengine process RSS with {args.targets:,} targets: {many['rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
