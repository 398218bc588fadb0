"""Did a run do the work it claims? Checks every row makes after it ran, from the order plans, what
the stages reported and what the fake vendors counted (which order ids each one accepted)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from bench.ledgers import BenchLedger
from bench.orders import OrderSet
from bench.result import Check, RunResult
from bench.vendors import DESTINATION_NAMES, digest


def planned_ids(
    orders: OrderSet, systems: Iterable[str] = DESTINATION_NAMES
) -> dict[str, list[str]]:
    """Per vendor, the order ids the plans send there."""
    planned: dict[str, list[str]] = {system: [] for system in systems}
    for order in orders:
        for system in order.plan.sends:
            if system in planned:
                planned[system].append(order.order_id)
    return planned


def vendors_accepted_the_plan(
    result: RunResult, orders: OrderSet, systems: Iterable[str] = DESTINATION_NAMES
) -> Check:
    """Each vendor accepted exactly the orders the plans send it, each once (its 2xx answers,
    read from the request bodies by the fakes)."""
    name = "each vendor accepted exactly the planned orders, each once"
    if result.vendor is None:
        return Check(name, False, "no vendor statistics")
    problems: list[str] = []
    total = 0
    for system, expected in planned_ids(orders, systems).items():
        accepted = result.vendor.accepted(system)
        total += accepted["ids"]
        if accepted["duplicates"]:
            shown = ", ".join(accepted["duplicated_ids"][:3])
            problems.append(f"{system}: {accepted['duplicates']} order(s) twice (e.g. {shown})")
        if accepted["distinct"] != len(expected):
            found = accepted["distinct"]
            problems.append(f"{system}: {found} distinct orders accepted, {len(expected)} planned")
        elif accepted["digest"] != digest(expected):
            problems.append(f"{system}: not the planned set of orders")
        if accepted["unreadable"]:
            problems.append(f"{system}: {accepted['unreadable']} accepted bodies without order ids")
    return Check(name, not problems, "; ".join(problems) or f"{total} deliveries")


def stages_reported_the_plan(result: RunResult) -> Check:
    """What the stages reported delivered, order by order, is what each plan calls for."""
    ok = result.order_mismatches == 0 and result.delivered == result.planned_sends
    detail = (
        f"{result.delivered} deliveries reported, {result.planned_sends} planned"
        + (f"; {result.order_mismatches} orders differ: " if result.order_mismatches else "")
        + "; ".join(result.mismatch_examples)
    )
    return Check("the stages reported exactly the planned deliveries", ok, detail)


def all_complete(result: RunResult) -> Check:
    ok = dict(result.outcomes) == {"complete": result.messages}
    return Check(
        "every order settled complete",
        ok,
        ", ".join(f"{k} {v}" for k, v in result.outcomes.items()),
    )


def one_lookup_per_miss(result: RunResult) -> Check:
    """The loyalty provider was asked once per cache miss, never on a hit, and every order with a
    card was looked up (the accept stage only)."""
    if result.vendor is None or result.cache_misses is None or result.cache_hits is None:
        return Check("one loyalty request per cache miss", False, "no cache counts")
    requests = result.vendor.loyalty_requests
    looked_up = result.cache_hits + result.cache_misses
    ok = requests == result.cache_misses and looked_up == result.lookups_needed
    return Check(
        "one loyalty request per cache miss, none on a hit",
        ok,
        f"{requests} requests, {result.cache_misses} misses, {result.cache_hits} hits, "
        f"{result.lookups_needed} orders with a card",
    )


def contract_fakes_agreed(result: RunResult) -> Check:
    """The sampled requests passed the contract-test fakes' full validation."""
    if result.vendor is None:
        return Check("sampled requests valid", False, "no vendor statistics")
    v = result.vendor
    return Check(
        "sampled requests pass the contract fakes' validation",
        v.invalid == 0,
        f"{v.validated} validated, {v.invalid} refused"
        + (f": {v.problems[:2]}" if v.invalid else ""),
    )


def core_checks(result: RunResult, orders: OrderSet) -> list[Check]:
    """What every run of the project's stages must show."""
    return [
        all_complete(result),
        stages_reported_the_plan(result),
        vendors_accepted_the_plan(result, orders),
        one_lookup_per_miss(result),
        contract_fakes_agreed(result),
    ]


def floor_checks(result: RunResult) -> list[Check]:
    """The floor posts raw orders (no vendor format): requests and answers are what it shows."""
    requests = result.vendor.destination_requests if result.vendor else -1
    return [
        Check(
            "one 2xx answer per planned request",
            requests == result.planned_sends == result.delivered,
            f"{requests} requests, {result.delivered} answered 2xx, {result.planned_sends} planned",
        )
    ]


def nothing_done_before(result: RunResult, ledger: BenchLedger, expected: int = 0) -> Check:
    """No delivery was answered "done earlier" by the ledger beyond the copies this run made
    itself (`expected`): the run's table (or memory) is its own, so nothing an earlier run
    delivered can stand in for this run's work."""
    where = f"table {ledger.table}" if ledger.table else f"a new {ledger.kind} ledger"
    return Check(
        "no delivery was found already done by an earlier run",
        result.previously == expected,
        f"{where}; {result.previously} deliveries reported done earlier, {expected} expected",
    )


def expected_rows(orders: OrderSet, lanes: Iterable[str]) -> Counter[tuple[str, str]]:
    """(destination, status) -> the ledger rows the plans call for: delivered where an order is
    sent, skipped where its event is routed to a lane that skips it."""
    enabled = set(lanes)
    rows: Counter[tuple[str, str]] = Counter()
    for order in orders:
        for name in order.plan.routes:
            if name in enabled:
                rows[(name, "delivered" if name in order.plan.sends else "skipped")] += 1
    return rows


def table_rows_as_planned(
    found: Counter[tuple[str, str]], expected: Counter[tuple[str, str]], table: str
) -> Check:
    """The run's own table holds exactly one row per routed delivery, with the planned status."""
    wrong = {
        key: (found.get(key, 0), expected.get(key, 0))
        for key in set(found) | set(expected)
        if found.get(key, 0) != expected.get(key, 0)
    }
    detail = f"table {table}: {sum(found.values())} rows, {sum(expected.values())} planned"
    if wrong:
        detail += "; " + ", ".join(
            f"{dest} {status}: {got} (planned {want})"
            for (dest, status), (got, want) in sorted(wrong.items())
        )
    name = "the ledger's table holds one row per routed delivery, as planned"
    return Check(name, not wrong, detail)


async def ledger_checks(
    result: RunResult,
    orders: OrderSet,
    ledger: BenchLedger,
    lanes: Iterable[str] = DESTINATION_NAMES,
) -> list[Check]:
    """The ledger's side of a run: nothing found done by an earlier run, and, on a Table ledger,
    the table holds a row per routed delivery (counted by scanning the run's own table)."""
    checks = [nothing_done_before(result, ledger)]
    if ledger.azurite is not None and ledger.table is not None:
        from bench.azurite import table_rows

        found = await table_rows(ledger.azurite.connection, ledger.table)
        checks.append(table_rows_as_planned(found, expected_rows(orders, lanes), ledger.table))
    return checks
