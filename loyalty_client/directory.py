"""Lookups served from a local JSON or CSV file, for local runs without a loyalty provider.

JSON: a list of records with a `loyaltyCardNumber` (or `card`) field, or an object keyed by card.
CSV: a header row with `loyaltyCardNumber` (or `card`) and the same field names as the provider.
Field names follow the LOYALTY_*_FIELD settings, like the HTTP client.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from loyalty_client.client import InvalidEmails, customer_from_document
from loyalty_client.customer import Customer, text_at
from loyalty_client.settings import LoyaltySettings

_CARD_KEYS = ("loyaltyCardNumber", "card")


def _normalise(card: str) -> str:
    return card.replace(" ", "").replace("-", "")


class CustomerDirectory:
    def __init__(self, path: Path, settings: LoyaltySettings) -> None:
        self._customers: dict[str, Customer] = {}
        self.invalid_emails = InvalidEmails()
        for card, record in self._records(path):
            found = customer_from_document(record, settings, invalid_email=self.invalid_emails)
            if (customer := found) is not None:
                self._customers[_normalise(card)] = customer

    @staticmethod
    def _records(path: Path) -> list[tuple[str, Any]]:
        if not path.is_file():
            raise ValueError(f"LOYALTY_FILE {path} does not exist")
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".csv":
            rows: list[Any] = list(csv.DictReader(text.splitlines()))
        else:
            document = json.loads(text)
            if isinstance(document, dict):
                return [(str(card), record) for card, record in document.items()]
            rows = list(document)
        pairs = []
        for row in rows:
            card = next((c for key in _CARD_KEYS if (c := text_at(row, key))), None)
            if card:
                pairs.append((card, row))
        return pairs

    def __len__(self) -> int:
        return len(self._customers)

    async def lookup(self, card: str, *, deadline: float) -> Customer | None:
        return self._customers.get(_normalise(card))

    async def aclose(self) -> None:
        return None
