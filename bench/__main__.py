"""`make bench`: benchmarks, each reported against a baseline measured in the same run.

Machines here are shared and noisy, so absolute numbers matter less than ratios.
"""

from __future__ import annotations

import asyncio

from bench import auth_overhead


async def main() -> None:
    for bench in (auth_overhead,):
        await bench.run()


if __name__ == "__main__":
    asyncio.run(main())
