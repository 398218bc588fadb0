"""bench/ledger_cost.py keeps working as the ledger changes: a tiny run, every ledger and path,
its own checks on (every claim cleared and recorded, one delivered row per delivery). No
timings are asserted; the request counts are."""

from __future__ import annotations

from bench.ledger_cost import parse, report, run


async def test_the_ledger_cost_bench_runs_and_checks_its_work(azurite: str) -> None:
    # `azurite` only skips the test where Azurite is missing: the bench starts its own.
    args = parse(
        [
            "--deliveries",
            "40",
            "--orders",
            "6",
            "--batch-sizes",
            "8",
            "--concurrency",
            "4",
            "--rounds",
            "1",
        ]
    )
    results = await run(args)
    got = {(r.section, r.path, r.kind): r for r in results}
    assert set(got) == {
        (section, path, kind)
        for section in ("ledger", "orders")
        for path in ("single", "batch 8")
        for kind in ("memory", "before", "table")
    }
    assert got["ledger", "single", "table"].requests == 2.0
    assert got["ledger", "single", "before"].requests == 2.0
    batch = got["ledger", "batch 8", "table"].requests
    assert batch is not None
    assert batch < 2.0
    assert all(r.cpu_ms > 0 for r in results)
    assert "Before / after" in report(results, args)
