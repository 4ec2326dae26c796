"""Benchmark scenarios. Each yields rows: asyncflow and baseline medians, ratio, µs per node."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

import asyncflow as af


@af.task(persist=False)
async def mem_leaf(i: int) -> int:
    await asyncio.sleep(0)
    return i


@af.task(persist=False)
async def mem_root(parts: list[int]) -> int:
    return len(parts)


@af.task
async def disk_leaf(i: int) -> int:
    return i


async def _plain_leaf(i: int) -> int:
    await asyncio.sleep(0)
    return i


def _peaks(engine: Callable[[], Any], baseline: Callable[[], Any]) -> tuple[int, int]:
    """Peak traced memory of one more run of each side (a separate pass: tracing slows things)."""
    return _peak(engine), _peak(baseline)


def _median_pair(repeat: int, engine: Callable[[], float], baseline: Callable[[], float]) -> tuple[float, float]:
    a, b = [], []
    for _ in range(repeat):  # alternate: a noisy neighbour hurts both sides alike
        gc.collect()
        a.append(engine())
        gc.collect()
        b.append(baseline())
    return statistics.median(a), statistics.median(b)


def _row(name: str, n: int, engine_s: float, base_s: float, **extra: Any) -> dict[str, Any]:
    if "peaks" in extra:  # (engine, baseline) peak bytes: into the row and its note
        pe, pb = extra.pop("peaks")
        extra["peak_asyncflow_mb"] = pe / 2**20
        extra["peak_baseline_mb"] = pb / 2**20
        extra["note"] = f"{extra.get('note', '')}; peak {pe / 2**20:.1f} MB vs {pb / 2**20:.1f} MB".lstrip("; ")
    return {
        "name": name,
        "n": n,
        "asyncflow_s": engine_s,
        "baseline_s": base_s,
        "ratio": engine_s / base_s,
        "per_node_us": engine_s / n * 1e6,
        "overhead_us": (engine_s - base_s) / n * 1e6,
        **extra,
    }


def _peak(fn: Callable[[], Any]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# in-memory fan-out ------------------------------------------------------------------------------


def _fanout_engine(n: int) -> float:
    async def go() -> float:
        t = time.perf_counter()
        root = mem_root(parts=[mem_leaf(i=i) for i in range(n)])
        await af.Workflow(root, execution_summary=False).run()
        return time.perf_counter() - t

    return asyncio.run(go())


def _fanout_baseline(n: int) -> float:
    async def go() -> float:
        t = time.perf_counter()
        out = await asyncio.gather(*(_plain_leaf(i) for i in range(n)))
        assert len(out) == n
        return time.perf_counter() - t

    return asyncio.run(go())


def fanout_memory(repeat: int, quick: bool) -> Iterator[dict[str, Any]]:
    for n in (2_000, 10_000) if quick else (20_000, 100_000):
        e, b = _median_pair(repeat, lambda: _fanout_engine(n), lambda: _fanout_baseline(n))
        note = "binding the nodes included"
        extra: dict[str, Any] = {}
        if n >= 100_000 or quick:
            pe, pb = _peak(lambda: _fanout_engine(n)), _peak(lambda: _fanout_baseline(n))
            extra = {"peak_asyncflow_mb": pe / 2**20, "peak_baseline_mb": pb / 2**20, "peak_ratio": pe / pb}
            note += f"; peak memory {pe / 2**20:.0f} MB vs gather {pb / 2**20:.0f} MB ({pe / pb:.2f}x)"
        yield _row(f"in-memory fan-out, {n:,} leaves", n, e, b, note=note, **extra)


# persisted fan-out on local disk ----------------------------------------------------------------


def _disk_engine(n: int, folder: str, nodes: list[af.Node]) -> float:
    async def go() -> float:
        t = time.perf_counter()
        result = await af.Workflow(nodes, store=folder, execution_summary=False).run()
        assert result.ran + result.skipped == n
        return time.perf_counter() - t

    return asyncio.run(go())


def _atomic_json_writes(n: int, folder: str) -> float:
    os.makedirs(folder, exist_ok=True)
    t = time.perf_counter()
    for i in range(n):
        path = os.path.join(folder, f"i={i}.json")
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(msgspec.json.encode(i))
        os.replace(tmp, path)
    return time.perf_counter() - t


def _exists_loop(paths: list[str]) -> float:
    t = time.perf_counter()
    for p in paths:
        assert os.path.exists(p)
    return time.perf_counter() - t


def fanout_disk(repeat: int, quick: bool) -> Iterator[dict[str, Any]]:
    for n in (2_000,) if quick else (2_000, 10_000):
        nodes = [disk_leaf(i=i) for i in range(n)]
        base = tempfile.mkdtemp(prefix="af-bench-")
        try:
            counter = iter(range(10**9))

            def first_engine() -> float:
                return _disk_engine(n, os.path.join(base, f"engine-{next(counter)}"), nodes)

            def first_baseline() -> float:
                return _atomic_json_writes(n, os.path.join(base, f"plain-{next(counter)}"))

            e, b = _median_pair(repeat, first_engine, first_baseline)
            yield _row(f"persisted fan-out, {n:,} leaves, first run", n, e, b, note="vs a loop of atomic JSON writes",
                       peaks=_peaks(first_engine, first_baseline))  # fmt: skip
            done = os.path.join(base, "complete")
            _disk_engine(n, done, nodes)
            flow = af.Workflow(nodes, store=done)
            paths = [flow.target(nd).path for nd in nodes]
            rerun, exists = (lambda: _disk_engine(n, done, nodes)), (lambda: _exists_loop(paths))
            e, b = _median_pair(repeat, rerun, exists)
            yield _row(f"persisted fan-out, {n:,} leaves, all complete", n, e, b, note="vs a loop of os.path.exists",
                       peaks=_peaks(rerun, exists))  # fmt: skip
        finally:
            shutil.rmtree(base, ignore_errors=True)


@af.task
async def disk_double(x: int = af.depends(disk_leaf)) -> int:
    return 2 * x


def staleness(repeat: int, quick: bool) -> Iterator[dict[str, Any]]:
    """All-complete re-run of N/2 nodes each with an upstream: N fingerprints decided (own code,
    version and parameters; inputs through the upstream's recorded output hash)."""
    n = 2_000 if quick else 10_000
    roots = [disk_double(i=i) for i in range(n // 2)]
    base = tempfile.mkdtemp(prefix="af-bench-")
    try:
        _disk_engine(n, base, roots)
        flow = af.Workflow(roots, store=base)
        paths = [flow.target(nd).path for nd in roots] + [flow.target(disk_leaf(i=i)).path for i in range(n // 2)]

        def engine() -> float:
            async def go() -> float:
                t = time.perf_counter()
                result = await af.Workflow(roots, store=base, execution_summary=False).run()
                assert result.ran == 0
                return time.perf_counter() - t

            return asyncio.run(go())

        e, b = _median_pair(repeat, engine, lambda: _exists_loop(paths))
        yield _row(f"staleness of {n:,} complete nodes (chains of 2)", n, e, b, note="vs a loop of os.path.exists",
                   peaks=_peaks(engine, lambda: _exists_loop(paths)))  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)


@af.task
async def s3_leaf(i: int) -> int:
    return i


@contextlib.contextmanager
def _moto() -> Iterator[dict[str, Any] | None]:
    """storage_options for a local S3 server (moto) with a `bench` bucket; None without s3fs/moto."""
    try:
        import s3fs
        from moto.server import ThreadedMotoServer
    except ImportError:
        yield None
        return
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        options = {"client_kwargs": {"endpoint_url": f"http://{host}:{port}"}}
        s3fs.S3FileSystem(skip_instance_cache=True, **options).mkdir("bench")
        yield options
    finally:
        server.stop()


def fanout_s3(repeat: int, quick: bool) -> Iterator[dict[str, Any]]:
    """Persisted fan-out on a local S3 server (moto), against s3fs calls at the same concurrency."""
    with _moto() as options:
        if options is None:
            return
        import s3fs

        n = 500 if quick else 2_000
        nodes = [s3_leaf(i=i) for i in range(n)]
        counter = iter(range(10**9))
        done_prefix = f"s3://bench/complete-{next(counter)}"

        def engine(prefix: str | None = None) -> float:
            async def go() -> float:
                t = time.perf_counter()
                store = prefix or f"s3://bench/engine-{next(counter)}"
                await af.Workflow(nodes, store=store, storage_options=options, execution_summary=False).run()
                return time.perf_counter() - t

            return asyncio.run(go())

        def plain(op: str) -> float:
            async def go() -> float:
                fs = s3fs.S3FileSystem(asynchronous=True, skip_instance_cache=True, **options)
                prefix = f"bench/plain-{next(counter)}" if op == "pipe" else done_prefix[5:] + "/s3_leaf"
                names = [f"{prefix}/i={i}.json" for i in range(n)]
                if op == "info":
                    names = [f"{prefix}/{nd.file_stem()}.json" for nd in nodes]
                sem = asyncio.Semaphore(100)

                async def one(name: str, i: int) -> None:
                    async with sem:
                        if op == "pipe":
                            await fs._pipe_file(name, msgspec.json.encode(i))
                        else:
                            await fs._info(name)

                t = time.perf_counter()
                await asyncio.gather(*(one(name, i) for i, name in enumerate(names)))
                elapsed = time.perf_counter() - t
                await fs._s3creator.__aexit__(None, None, None)
                return elapsed

            return asyncio.run(go())

        e, b = _median_pair(repeat, engine, lambda: plain("pipe"))
        yield _row(f"S3 fan-out, {n:,} leaves, first run", n, e, b, note="vs s3fs pipe x N, 100 at once")
        engine(done_prefix)
        e, b = _median_pair(repeat, lambda: engine(done_prefix), lambda: plain("info"))
        yield _row(f"S3 fan-out, {n:,} leaves, all complete", n, e, b, note="vs s3fs info x N, 100 at once")


# services: small runs in a big store -------------------------------------------------------------


@af.task
async def svc_leaf(i: int) -> int:
    return i


def _small_runs(store: str, first: int, count: int, options: dict[str, Any] | None = None) -> float:
    """Seconds for `count` one-node runs one after another, each of a new node (decide, run, publish)."""

    async def go() -> float:
        t = time.perf_counter()
        for i in range(first, first + count):
            await af.Workflow(svc_leaf(i=i), store=store, storage_options=options or {}, execution_summary=False).run()
        return time.perf_counter() - t

    return asyncio.run(go())


def _concurrent_small_runs(store: str, first: int, count: int) -> None:
    async def go() -> None:
        await asyncio.gather(*(af.Workflow(svc_leaf(i=i), store=store, execution_summary=False).run()
                               for i in range(first, first + count)))  # fmt: skip

    asyncio.run(go())


def _count_s3_requests(fn: Callable[[], Any]) -> list[str]:
    import s3fs

    calls: list[str] = []
    original = s3fs.S3FileSystem._call_s3

    async def spy(fs: Any, method: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(method if isinstance(method, str) else getattr(method, "__name__", str(method)))
        return await original(fs, method, *args, **kwargs)

    s3fs.S3FileSystem._call_s3 = spy
    try:
        fn()
    finally:
        s3fs.S3FileSystem._call_s3 = original
    return calls


def services(repeat: int, quick: bool) -> Iterator[dict[str, Any]]:
    """A service storing many small runs: a one-node run in a task folder that already holds N targets
    vs the same run in an empty one; 200 such runs at once; the same on S3 (requests counted)."""
    n, runs = (2_000, 20) if quick else (20_000, 50)
    counter = iter(range(10**6, 10**9, 1000))
    base = tempfile.mkdtemp(prefix="af-bench-")
    try:
        big = os.path.join(base, "big")
        _disk_engine(n, big, [svc_leaf(i=i) for i in range(n)])
        e, b = _median_pair(repeat, lambda: _small_runs(big, next(counter), runs),
                            lambda: _small_runs(os.path.join(base, f"empty-{next(counter)}"), 0, runs))  # fmt: skip
        per_run = f"{e / runs * 1e3:.2f} ms vs {b / runs * 1e3:.2f} a run"
        yield _row(f"one-node run, folder of {n:,} targets", runs, e, b,
                   note=f"vs the same run in an empty folder ({per_run}); 200 runs at once:",
                   peaks=(_peak(lambda: _concurrent_small_runs(big, next(counter), 200)),
                          _peak(lambda: _concurrent_small_runs(os.path.join(base, "empty-c"), 0, 200))))  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)
    with _moto() as options:
        if options is None:
            return
        _small_runs("s3://bench/big", 0, 1, options)  # the bucket checked once, then fill the prefix:
        asyncio.run(af.Workflow([svc_leaf(i=i) for i in range(n)], store="s3://bench/big", storage_options=options,
                                execution_summary=False).run())  # fmt: skip
        e, b = _median_pair(repeat, lambda: _small_runs("s3://bench/big", next(counter), runs, options),
                            lambda: _small_runs(f"s3://bench/empty-{next(counter)}", 0, runs, options))  # fmt: skip
        calls = _count_s3_requests(lambda: _small_runs("s3://bench/big", next(counter), 1, options))
        kinds = ", ".join(sorted(set(calls)))
        yield _row(f"S3 one-node run, prefix of {n:,} objects", runs, e, b,
                   note=f"vs an empty prefix; {len(calls)} requests a run ({kinds})")  # fmt: skip


# the web example under load ------------------------------------------------------------------


# A health checker as a load balancer runs one: its own process and connection, asking every 20 ms
# until its stdin closes, then printing its latencies (ms, sorted). Probing from the load client
# itself measures that client's own congestion, not the server.
_HEALTH_PROBE = """
import sys, threading, time, httpx
stop, lat = threading.Event(), []
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
with httpx.Client(base_url=sys.argv[1], timeout=60) as client:
    while not stop.is_set():
        t = time.perf_counter()
        client.get("/health")
        lat.append((time.perf_counter() - t) * 1e3)
        time.sleep(0.02)
print(" ".join(f"{x:.2f}" for x in sorted(lat)))
"""


def web_load(repeat: int, quick: bool) -> Iterator[dict[str, Any]]:
    """N distinct one-node runs posted to the web example (uvicorn on 127.0.0.1), 50 at a time,
    while a separate health checker asks /health every 20 ms; vs N bare /health requests at the same
    concurrency. Reports /health p50/p99 under load, the server's peak RSS and failed runs."""
    try:
        import httpx
        import uvicorn  # noqa: F401
    except ImportError:
        return
    import socket
    import subprocess
    import sys

    n = 1_000 if quick else 10_000
    base = tempfile.mkdtemp(prefix="af-bench-web-")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "ASYNCFLOW_STORE": os.path.join(base, "data"), "PYTHONPATH": root}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "examples.web.app:app", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"], cwd=base, env=env)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)

        def rss_mb() -> float:
            with open(f"/proc/{proc.pid}/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

        async def load(kind: str) -> tuple[float, float, int]:
            peak, failed = rss_mb(), 0
            counter = iter(range(n))
            # keep-alive shorter than uvicorn's 5 s: never reuse a connection the server is closing
            limits = httpx.Limits(max_connections=50, keepalive_expiry=2)
            async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

                async def worker() -> None:
                    nonlocal failed, peak
                    for i in counter:
                        if kind == "health":
                            await client.get("/health")
                            continue
                        try:
                            body = {"task": "score", "params": {"user": f"u{i}"}}
                            r = await client.post("/runs?wait=true", json=body)
                            failed += r.status_code != 200 or r.json().get("status") != "succeeded"
                        except httpx.TransportError:
                            failed += 1
                        if i % 100 == 0:
                            peak = max(peak, rss_mb())

                t0 = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(50)))
                return time.perf_counter() - t0, peak, failed

        checker = subprocess.Popen([sys.executable, "-c", _HEALTH_PROBE, url], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)  # fmt: skip
        e, peak, failed = asyncio.run(load("runs"))
        lat = [float(x) for x in checker.communicate("", timeout=120)[0].split()]
        b, _, _ = asyncio.run(load("health"))

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

        yield _row(f"web example, {n:,} distinct runs, 50 at a time", n, e, b, peak_rss_mb=peak, failed=failed,
                   health_p99_ms=pct(0.99),
                   note=f"vs {n:,} bare /health requests; {n / e:.0f} runs/s, {failed} failed, /health p50 "
                        f"{pct(0.5):.1f} ms p99 {pct(0.99):.1f} ms max {lat[-1] if lat else 0:.0f} ms, "
                        f"server peak RSS {peak:.0f} MB")  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(base, ignore_errors=True)


# dynamic fan-out, chains, wide-and-deep, sleep-bound ---------------------------------------------


@af.task(persist=False)
async def mem_spawn(n: int) -> int:
    return len(await af.gather(*[mem_leaf(i=i) for i in range(n)]))


@af.task(persist=False)
async def mem_step(i: int, prev: int = 0) -> int:
    await asyncio.sleep(0)
    return prev + 1


@af.task(persist=False)
async def mem_sleep(i: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return i


def _chain(length: int, lane: int = 0) -> af.Node:
    node = mem_step(i=lane * 1_000_000)
    for k in range(1, length):
        node = mem_step(i=lane * 1_000_000 + k, prev=node)
    return node


def _engine(build: Callable[[], Any], **options: Any) -> float:
    async def go() -> float:
        t = time.perf_counter()
        await af.Workflow(build(), execution_summary=False, **options).run()
        return time.perf_counter() - t

    return asyncio.run(go())


def _plain(coro_factory: Callable[[], Any]) -> float:
    async def go() -> float:
        t = time.perf_counter()
        await coro_factory()
        return time.perf_counter() - t

    return asyncio.run(go())


async def _plain_chain(length: int) -> int:
    value = 0
    for _ in range(length):
        value = await _plain_step(value)
    return value


async def _plain_step(prev: int) -> int:
    await asyncio.sleep(0)
    return prev + 1


def shapes(repeat: int, quick: bool) -> Iterator[dict[str, Any]]:
    """Dynamic fan-out, a deep chain, a fan-out of chains and a sleep-bound fan-out under a bound."""
    n = 2_000 if quick else 10_000
    length = 500 if quick else 2_000
    lanes, depth = (20, 20) if quick else (100, 100)
    count, bound, pause = (200, 20, 0.01) if quick else (1_000, 50, 0.01)

    async def bounded() -> None:
        sem = asyncio.Semaphore(bound)

        async def one(i: int) -> None:
            async with sem:
                await asyncio.sleep(pause)

        await asyncio.gather(*(one(i) for i in range(count)))

    ideal = count * pause / bound
    cases = [
        (f"dynamic fan-out, a body gathers {n:,}", n, "vs asyncio.gather",
         lambda: _engine(lambda: mem_spawn(n=n)),
         lambda: _plain(lambda: asyncio.gather(*(_plain_leaf(i) for i in range(n))))),
        (f"deep chain, {length:,} tasks in sequence", length, "vs awaiting them one by one",
         lambda: _engine(lambda: _chain(length)), lambda: _plain(lambda: _plain_chain(length))),
        (f"wide and deep, {lanes} chains of {depth}", lanes * depth, "vs gather of sequential chains",
         lambda: _engine(lambda: [_chain(depth, lane) for lane in range(lanes)]),
         lambda: _plain(lambda: asyncio.gather(*(_plain_chain(depth) for _ in range(lanes))))),
        (f"sleep-bound, {count:,} x {pause}s, bound {bound}", count, f"ideal N x sleep / bound = {ideal:.2f}s",
         lambda: _engine(lambda: [mem_sleep(i=i, seconds=pause) for i in range(count)], max_concurrency=bound),
         lambda: _plain(bounded)),
    ]  # fmt: skip
    for name, size, note, engine, baseline in cases:
        e, b = _median_pair(repeat, engine, baseline)
        yield _row(name, size, e, b, note=note, peaks=_peaks(engine, baseline))


def scale(repeat: int, quick: bool) -> Iterator[dict[str, Any]]:
    """1,000,000 in-memory leaves, and 10,000,000 items streamed through af.map: time and peak RSS,
    each measured in a fresh process (RSS is per process)."""
    import subprocess
    import sys

    leaves = 100_000 if quick else 1_000_000
    items = 200_000 if quick else 10_000_000
    code = {
        "fan-out": f"""
import asyncio, resource, time, asyncflow as af
from benchmarks.scenarios import mem_leaf, mem_root
async def main():
    t = time.perf_counter()
    await af.Workflow(mem_root(parts=[mem_leaf(i=i) for i in range(1, {leaves} + 1)]), execution_summary=False).run()
    print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
asyncio.run(main())
""",
        "stream": f"""
import asyncio, resource, time, asyncflow as af
from benchmarks.scenarios import mem_leaf
async def main():
    t = time.perf_counter()
    n = 0
    async for _ in af.map(mem_leaf, range({items}), window=100):
        n += 1
    assert n == {items}
    print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
asyncio.run(main())
""",
    }
    for name, n in (("fan-out", leaves), ("stream", items)):
        out = subprocess.run([sys.executable, "-c", code[name]], capture_output=True, text=True, check=True)
        seconds, rss = map(float, out.stdout.split())
        label = f"{n:,} in-memory leaves" if name == "fan-out" else f"af.map over {n:,} items"
        yield {"name": f"scale: {label}", "n": n, "asyncflow_s": seconds, "baseline_s": seconds, "ratio": 1.0,
               "per_node_us": seconds / n * 1e6, "overhead_us": 0.0, "peak_rss_mb": rss,
               "note": f"peak RSS {rss:.0f} MB (no baseline: absolute figures)"}  # fmt: skip


# Dask ---------------------------------------------------------------------------------------------

BENCH_DASK = af.DaskExecutor()  # its address is set by the scenario: one cluster for every side


def _spins_for(seconds: float) -> int:
    """How many loop turns take `seconds` here, alone (measured once, in this process)."""
    t, k = time.perf_counter(), 0
    while k < 2_000_000:
        k += 1
    return int(2_000_000 / (time.perf_counter() - t) * seconds)


def _busy(spins: int) -> None:
    """A fixed amount of pure-Python work (the same on every side: not a wall-clock wait)."""
    k = 0
    while k < spins:
        k += 1


@af.task(executor=BENCH_DASK, persist=False)
def dask_cpu(i: int, spins: int = 0) -> int:
    _busy(spins)
    return i


@af.task(persist=False)
def thread_cpu(i: int, spins: int = 0) -> int:
    _busy(spins)
    return i


def fanout_dask(repeat: int, quick: bool) -> Iterator[dict[str, Any]]:
    """CPU-bound fan-out: 200 bodies of ~50 ms on a 2-process LocalCluster vs the same on threads;
    and asyncflow's per-task overhead on Dask vs `client.map` of the same function."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        return
    n = 40 if quick else 200

    def on(build: Callable[[], Any]) -> float:
        async def go() -> float:
            t = time.perf_counter()
            await af.Workflow(build(), execution_summary=False, store="memory://bench-dask").run()
            return time.perf_counter() - t

        return asyncio.run(go())

    def with_cluster(fn: Callable[[str], Any]) -> Any:
        async def go() -> Any:
            async with LocalCluster(asynchronous=True, n_workers=2, threads_per_worker=1, processes=True,
                                    host="127.0.0.1", dashboard_address=":0") as cluster:  # fmt: skip
                return await anyio.to_thread.run_sync(fn, cluster.scheduler_address)

        import anyio.to_thread

        return asyncio.run(go())

    def measure(address: str) -> list[dict[str, Any]]:
        BENCH_DASK.address = address
        spins = _spins_for(0.05)
        on_dask = lambda: on(lambda: [dask_cpu(i=i, spins=spins) for i in range(n)])  # noqa: E731
        on_threads = lambda: on(lambda: [thread_cpu(i=i, spins=spins) for i in range(n)])  # noqa: E731
        dask_t, thread_t = _median_pair(repeat, on_dask, on_threads)

        def direct() -> float:
            async def go() -> float:
                async with Client(address, asynchronous=True) as client:
                    t = time.perf_counter()
                    await client.gather(client.map(dask_cpu.fn, range(n), pure=False))
                    return time.perf_counter() - t

            return asyncio.run(go())

        fast = [(lambda: on(lambda: [dask_cpu(i=i) for i in range(n)])), direct]
        e, b = _median_pair(repeat, *fast)
        return [
            _row(f"Dask CPU fan-out, {n} x 50 ms, 2 workers", n, dask_t, thread_t,
                 note=f"vs the same on threads: {thread_t / dask_t:.2f}x faster"),
            _row(f"Dask per-task overhead, {n} tasks", n, e, b, note="vs client.map of the same function"),
        ]  # fmt: skip

    yield from with_cluster(measure)


@dataclass
class Scenario:
    name: str
    run: Callable[..., Iterator[dict[str, Any]]]


SCENARIOS = [
    Scenario("fanout-memory", lambda repeat, quick: fanout_memory(repeat, quick)),
    Scenario("fanout-disk", lambda repeat, quick: fanout_disk(repeat, quick)),
    Scenario("staleness", lambda repeat, quick: staleness(repeat, quick)),
    Scenario("fanout-s3", lambda repeat, quick: fanout_s3(repeat, quick)),
    Scenario("services", lambda repeat, quick: services(repeat, quick)),
    Scenario("web", lambda repeat, quick: web_load(repeat, quick)),
    Scenario("fanout-dask", lambda repeat, quick: fanout_dask(repeat, quick)),
    Scenario("shapes", lambda repeat, quick: shapes(repeat, quick)),
    Scenario("scale", lambda repeat, quick: scale(repeat, quick)),
]
