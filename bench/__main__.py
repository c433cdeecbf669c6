"""`make bench`: benchmarks, each reported against a baseline measured in the same run.

Machines here are shared and noisy, so absolute numbers matter less than ratios.
`python -m bench fresh_import ...` runs only the benchmarks named.
"""

from __future__ import annotations

import sys

from bench import (
    auth_overhead,
    compare_runs,
    conversations,
    event_storage,
    export_stream,
    fresh_import,
    growth_curve,
    reads_at_scale,
    request_path,
    run_at_scale,
    run_end_stream,
    run_throughput,
    sse_fanout,
    startup,
)

BENCHES = {
    bench.__name__.rsplit(".", 1)[-1]: bench
    for bench in (
        startup,
        run_throughput,
        run_at_scale,
        conversations,
        compare_runs,
        fresh_import,
        export_stream,
        reads_at_scale,
        event_storage,
        growth_curve,
        auth_overhead,
        request_path,
        sse_fanout,
        run_end_stream,
    )
}


async def main(names: list[str]) -> None:
    for name in names or BENCHES:
        await BENCHES[name].run()


if __name__ == "__main__":
    import uvloop

    unknown = set(sys.argv[1:]) - set(BENCHES)
    if unknown:
        sys.exit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; known: {', '.join(BENCHES)}")
    uvloop.run(main(sys.argv[1:]))  # the loop uvicorn serves with
