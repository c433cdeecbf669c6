"""`make bench`: benchmarks, each reported against a baseline measured in the same run.

Machines here are shared and noisy, so absolute numbers matter less than ratios.
"""

from __future__ import annotations

from bench import auth_overhead, compare_runs, run_throughput, sse_fanout


async def main() -> None:
    for bench in (run_throughput, compare_runs, auth_overhead, sse_fanout):
        await bench.run()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())  # the loop uvicorn serves with
