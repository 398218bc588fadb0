"""What an order costs in Service Bus operations and Table Storage transactions, at list prices.

Pay-as-you-go list prices in US dollars, as published on Microsoft's pricing pages (read on
2026-11-25 from copies of those pages: the pages render their figures with a script, and this
machine reaches no Microsoft site; see docs/performance.md, "Lanes: isolation and cost", for the
sources and what to check before relying on them):

- Service Bus Standard (https://azure.microsoft.com/pricing/details/service-bus/): a base charge
  of $0.0135 per hour (about $10 a month) that includes the first 13 million operations a month;
  then $0.80 per million operations up to 100 million, $0.50 per million up to 2,500 million,
  $0.20 per million beyond. The copies found name no region; the operation prices are not
  listed per region there.
- Table Storage (https://azure.microsoft.com/pricing/details/storage/tables/), Standard, LRS:
  $0.00036 per 10,000 transactions (quoted for East US and for Austria East); every REST request
  is a transaction.
"""

from __future__ import annotations

from typing import Any

SERVICE_BUS_BASE_PER_HOUR = 0.0135
SERVICE_BUS_INCLUDED_OPS = 13_000_000
#: (up to this many operations a month, dollars per million operations)
SERVICE_BUS_TIERS: tuple[tuple[float, float], ...] = (
    (100e6, 0.80),
    (2_500e6, 0.50),
    (float("inf"), 0.20),
)
TABLE_PER_10K_TRANSACTIONS = 0.00036


def per_million_orders(sb_ops_per_order: float, table_requests_per_order: float) -> dict[str, Any]:
    """Dollars per million orders at each Service Bus tier's marginal price (beyond the 13 million
    operations the base charge includes), and for the ledger's Table Storage transactions."""
    ops = sb_ops_per_order * 1e6
    return {
        "service_bus_operations": round(ops),
        "service_bus_usd": {
            "13M-100M ops/month ($0.80/M)": round(sb_ops_per_order * 0.80, 2),
            "100M-2,500M ops/month ($0.50/M)": round(sb_ops_per_order * 0.50, 2),
            "over 2,500M ops/month ($0.20/M)": round(sb_ops_per_order * 0.20, 2),
        },
        "table_transactions": round(table_requests_per_order * 1e6),
        "table_usd": round(table_requests_per_order * 1e6 / 10_000 * TABLE_PER_10K_TRANSACTIONS, 3),
    }


def monthly_usd(orders_per_month: float, sb_ops_per_order: float, table_per_order: float) -> float:
    """A month's Service Bus Standard and ledger bill for `orders_per_month` (base charge over
    730 hours, the included operations, the graduated tiers, the Table transactions)."""
    ops = orders_per_month * sb_ops_per_order
    cost = SERVICE_BUS_BASE_PER_HOUR * 730
    floor = float(SERVICE_BUS_INCLUDED_OPS)
    for ceiling, price in SERVICE_BUS_TIERS:
        if ops > floor:
            cost += (min(ops, ceiling) - floor) / 1e6 * price
        floor = ceiling
    cost += orders_per_month * table_per_order / 10_000 * TABLE_PER_10K_TRANSACTIONS
    return cost
