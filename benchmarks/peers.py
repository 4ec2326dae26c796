"""The same trivial fan-out (N leaves returning their index, one root summing them) in asyncflow,
plain asyncio, and the peers, each in its documented fastest way, each in a fresh process.

python -m benchmarks.peers [N ...]      (extra `bench-peers`: dask, luigi, prefect)
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PROGRAMS = {
    "plain asyncio": """
        import asyncio, time
        async def leaf(i): return i
        async def main():
            t = time.perf_counter()
            total = sum(await asyncio.gather(*(leaf(i) for i in range(N))))
            return time.perf_counter() - t, total
        print(*asyncio.run(main()))
    """,
    "asyncflow": """
        import asyncio, time, asyncflow as af
        @af.task(persist=False)
        async def leaf(i: int) -> int: return i
        @af.task(persist=False)
        async def root(xs: list[int]) -> int: return sum(xs)
        async def main():
            t = time.perf_counter()
            flow = af.Workflow(root(xs=[leaf(i=i) for i in range(N)]), execution_summary=False)
            await flow.run()
            return time.perf_counter() - t, await flow.output()
        print(*asyncio.run(main()))
    """,
    "dask (delayed, threads)": """
        import time, dask
        @dask.delayed
        def leaf(i): return i
        @dask.delayed
        def root(xs): return sum(xs)
        t = time.perf_counter()
        total = root([leaf(i) for i in range(N)]).compute(scheduler="threads")
        print(time.perf_counter() - t, total)
    """,
    "luigi (local scheduler)": """
        import time, logging, luigi
        from luigi.mock import MockTarget
        logging.getLogger("luigi-interface").setLevel(logging.ERROR)
        class Leaf(luigi.Task):
            i = luigi.IntParameter()
            def output(self): return MockTarget(f"leaf-{self.i}")
            def run(self):
                with self.output().open("w") as f: f.write(str(self.i))
        class Root(luigi.Task):
            def requires(self): return [Leaf(i=i) for i in range(N)]
            def output(self): return MockTarget("root")
            def run(self):
                total = sum(int(t.open("r").read()) for t in self.input())
                with self.output().open("w") as f: f.write(str(total))
        t = time.perf_counter()
        luigi.build([Root()], local_scheduler=True, workers=1, log_level="ERROR")
        print(time.perf_counter() - t, Root().output().open("r").read())
    """,
    "prefect 3 (task.map, threads)": """
        import time, os
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
        from prefect import flow, task
        @task
        def leaf(i): return i
        @flow
        def fan(n):
            return sum(f.result() for f in leaf.map(range(n)))
        fan(2)  # warm: the first flow starts Prefect's temporary API server (~10 s, not counted)
        t = time.perf_counter()
        total = fan(N)
        print(time.perf_counter() - t, total)
    """,
}


def measure(name: str, n: int, timeout: float = 600) -> dict[str, object]:
    code = "N = " + str(n) + "\n" + textwrap.dedent(PROGRAMS[name])
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"engine": name, "n": n, "seconds": None, "note": f"over {timeout:.0f} s"}
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["failed"])[-1]
        return {"engine": name, "n": n, "seconds": None, "note": last[:120]}
    seconds, total = out.stdout.split()[-2:]
    assert int(float(total)) == n * (n - 1) // 2, (name, total)
    return {"engine": name, "n": n, "seconds": float(seconds), "note": ""}


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [1_000, 10_000]
    rows = []
    for n in sizes:
        for name in PROGRAMS:
            row = measure(name, n)
            rows.append(row)
            secs = f"{row['seconds']:.3f} s" if row["seconds"] is not None else f"- ({row['note']})"
            print(f"N={n:>7,}  {name:<32} {secs}", flush=True)
    with open("benchmarks/results/peers.json", "w") as f:
        json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
