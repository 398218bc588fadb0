"""Did a run do the work it claims? Checks every row makes after it ran, from the order plans, what
the stages reported and what the fake vendors counted (which order ids each one accepted)."""

from __future__ import annotations

from collections.abc import Iterable

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
