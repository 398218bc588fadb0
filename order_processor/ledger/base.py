"""The claim/record rules, once for every store, for one row and for a lane's batch."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from order_processor.ledger.entries import (
    FINAL,
    STATUS_FOR_RESULT,
    Claimed,
    ClaimRequest,
    Decided,
    Existing,
    Gate,
    Held,
    Inserted,
    LedgerEntry,
    LedgerFailure,
    LedgerRejected,
    LedgerStatus,
    LedgerUnavailable,
    Replaced,
    Settled,
    each,
)
from order_processor.model import DeliveryStatus, DestinationResult, order_key, truncate

log = logging.getLogger("order_processor.ledger")


def _registered_destinations() -> list[str]:
    from order_processor.destinations import DESTINATIONS  # the registry, imported when asked

    return list(DESTINATIONS)


# -- The claim/record rules, once for every store -------------------------------------------


def _recorded(
    claim: Claimed, result: DestinationResult, now: datetime, decided: Decided | None = None
) -> LedgerEntry:
    """The row once the result is in, with what the lane decided (retry copy, dead letter)."""
    decided = decided or Decided()
    return replace(
        claim.entry,
        status=STATUS_FOR_RESULT[result.status],
        attempts=claim.entry.attempts + result.attempts,
        last_attempt=now,
        lease_until=None,
        # a vendor's error text can be long; a Table string property holds 64 KiB
        last_error=None if result.status is DeliveryStatus.DELIVERED else truncate(result.detail),
        http_status=result.http_status,
        response_id=result.response_id,
        next_attempt=decided.next_attempt,
        dead_letter_reason=decided.dead_letter_reason,
    )


def _decisions(
    recorded: Sequence[object], decided: Sequence[Decided | None] | None
) -> Sequence[Decided | None]:
    if decided is None:
        return [None] * len(recorded)
    if len(decided) != len(recorded):
        raise ValueError("record_many: one decision per row")
    return decided


def _taken_over(claim: Claimed, result: DestinationResult) -> None:
    log.warning(
        "ledger row %s/%s was taken over before its result was written",
        claim.entry.event_key,
        claim.entry.destination,
        extra={"event_key": claim.entry.event_key, "destination": result.destination},
    )


class Ledger(ABC):
    """Claim/record on top of three ETag-guarded primitives a store implements (`_insert`,
    `_get`, `_replace`), plus `_rows_for_order`. A lane's batch is claimed and recorded one row
    at a time, concurrently; `BatchLedger` does it with a store's many-row primitives instead."""

    async def claim(
        self,
        event_key: str,
        destination: str,
        *,
        message_id: str | None,
        now: datetime,
        lease: timedelta,
    ) -> Gate:
        fresh = LedgerEntry(
            event_key=event_key,
            destination=destination,
            status=LedgerStatus.IN_FLIGHT,
            message_id=message_id,
            first_attempt=now,
            last_attempt=now,
            lease_until=now + lease,
        )
        etag = await self._insert(fresh)
        if etag is not None:
            return Claimed(fresh, etag)
        found = await self._get(event_key, destination)
        if found is None:  # deleted in between: someone is tidying up; try again later
            return Held(None)
        current, current_etag = found
        if current.status in FINAL:
            return Settled(current)
        if current.held_at(now):
            return Held(current)
        taken = replace(
            current,
            status=LedgerStatus.IN_FLIGHT,
            message_id=message_id,
            last_attempt=now,
            lease_until=now + lease,
            next_attempt=None,
            dead_letter_reason=None,
        )
        etag = await self._replace(taken, current_etag)
        return Claimed(taken, etag) if etag is not None else Held(current)

    async def record(
        self,
        claim: Claimed,
        result: DestinationResult,
        *,
        now: datetime,
        decided: Decided | None = None,
    ) -> None:
        """Write the outcome (and what the lane `decided`) over our claim; if the claim was taken
        over meanwhile, the newer holder's row wins and ours is only logged."""
        if await self._replace(_recorded(claim, result, now, decided), claim.etag) is None:
            _taken_over(claim, result)

    async def claim_many(
        self,
        requests: Sequence[ClaimRequest],
        destination: str,
        *,
        now: datetime,
        lease: timedelta,
    ) -> list[Gate | LedgerFailure]:
        """One gate per request, in order (a batch lane's messages for one destination): the
        same answers as claiming one by one (the same event twice: the first copy claims, the
        second finds it held). A failure of one request is returned in its place, not raised.
        Here: one by one, concurrently."""
        return await each(
            self.claim(r.event_key, destination, message_id=r.message_id, now=now, lease=lease)
            for r in requests
        )

    async def record_many(
        self,
        recorded: Sequence[tuple[Claimed, DestinationResult]],
        *,
        now: datetime,
        decided: Sequence[Decided | None] | None = None,
    ) -> list[LedgerFailure | None]:
        """Write each result over its claim (with `decided`, one per row, when given); a failure
        is returned in its place, not raised."""
        decisions = _decisions(recorded, decided)
        return await each(
            self.record(claim, result, now=now, decided=d)
            for (claim, result), d in zip(recorded, decisions, strict=True)
        )

    async def read(self, event_key: str, destination: str) -> LedgerEntry | None:
        found = await self._get(event_key, destination)
        return found[0] if found else None

    async def rows_for_order(
        self, order_id: str, destinations: Iterable[str] | None = None
    ) -> list[LedgerEntry]:
        """Every row of one order (all its events, each destination), by destination then event
        key: one RowKey range in one partition per destination, never a table scan.
        `destinations` defaults to every registered destination."""
        names = sorted(_registered_destinations() if destinations is None else destinations)
        rows = await self._rows_for_order(order_key(order_id), names)
        return sorted(rows, key=lambda e: (e.destination, e.event_key))

    async def rows_for_message(self, message_id: str) -> list[LedgerEntry]:
        """The rows whose MessageId (the order message's, as the ERP sent it) is this one. No
        key holds it: a store may have to read every row (TableLedger: a table scan), so this
        is for an operator's occasional lookup, never for the message path."""
        rows = await self._rows_for_message(message_id)
        return sorted(rows, key=lambda e: (e.event_key, e.destination))

    async def aclose(self) -> None:
        return None

    async def _rows_for_message(self, message_id: str) -> list[LedgerEntry]:
        """Every row with this MessageId (a store that cannot say raises NotImplementedError)."""
        raise NotImplementedError(f"{type(self).__name__} cannot find rows by MessageId")

    @abstractmethod
    async def _insert(self, entry: LedgerEntry) -> str | None:
        """Insert if absent; the new ETag, or None when the row exists."""

    @abstractmethod
    async def _get(self, event_key: str, destination: str) -> tuple[LedgerEntry, str] | None:
        """The row and its ETag, or None."""

    @abstractmethod
    async def _replace(self, entry: LedgerEntry, etag: str | None) -> str | None:
        """Replace if the row still has `etag`; the new ETag, or None when it changed."""

    @abstractmethod
    async def _rows_for_order(self, order: str, destinations: list[str]) -> list[LedgerEntry]:
        """Every row whose event key starts with `<order>:`, for these destinations."""


class BatchLedger(Ledger):
    """The same rules, with a store's many-row primitives: a batch's rows are inserted with
    `_insert_many`, read where they exist, and taken over or recorded with `_replace_many`, so a
    store that writes many rows per request (Table Storage's entity group transactions) needs
    a few requests per batch instead of one or more per row. One row (the single-message path)
    takes `Ledger`'s single-row steps, the same requests with fewer layers in between, unless
    `_one_row_as_batch` says its claim needs the batch steps too."""

    @property
    def _one_row_as_batch(self) -> bool:
        return False

    async def claim(
        self,
        event_key: str,
        destination: str,
        *,
        message_id: str | None,
        now: datetime,
        lease: timedelta,
    ) -> Gate:
        if not self._one_row_as_batch:
            return await super().claim(
                event_key, destination, message_id=message_id, now=now, lease=lease
            )
        (gate,) = await self.claim_many(
            [ClaimRequest(event_key, message_id)], destination, now=now, lease=lease
        )
        if isinstance(gate, LedgerUnavailable | LedgerRejected):
            raise gate
        return gate

    async def claim_many(
        self,
        requests: Sequence[ClaimRequest],
        destination: str,
        *,
        now: datetime,
        lease: timedelta,
    ) -> list[Gate | LedgerFailure]:
        if len(requests) == 1 and not self._one_row_as_batch:
            return await super().claim_many(requests, destination, now=now, lease=lease)
        first: dict[str, int] = {}
        fresh: list[LedgerEntry] = []
        slots: list[int] = []
        for request in requests:
            slot = first.get(request.event_key)
            if slot is None:
                slot = first[request.event_key] = len(fresh)
                fresh.append(
                    LedgerEntry(
                        event_key=request.event_key,
                        destination=destination,
                        status=LedgerStatus.IN_FLIGHT,
                        message_id=request.message_id,
                        first_attempt=now,
                        last_attempt=now,
                        lease_until=now + lease,
                    )
                )
            slots.append(slot)
        gates = await self._claim_rows(fresh, now=now, lease=lease) if fresh else []
        answered: set[int] = set()
        out: list[Gate | LedgerFailure] = []
        for slot in slots:
            gate = gates[slot]
            if slot in answered and isinstance(gate, Claimed):
                gate = Held(gate.entry)  # the same event again in this batch: the first holds it
            answered.add(slot)
            out.append(gate)
        return out

    async def _claim_rows(
        self, fresh: Sequence[LedgerEntry], *, now: datetime, lease: timedelta
    ) -> list[Gate | LedgerFailure]:
        """`claim`'s steps for many rows: insert every row; read those that exist; take over
        those neither final nor held."""
        inserted = await self._insert_many(fresh)
        gates: list[Gate | LedgerFailure | None] = [None] * len(fresh)
        known: dict[int, Existing] = {}
        unread: list[int] = []
        for i, (entry, answer) in enumerate(zip(fresh, inserted, strict=True)):
            if isinstance(answer, str):
                gates[i] = Claimed(entry, answer)
            elif answer is None:
                unread.append(i)
            elif isinstance(answer, Existing):
                known[i] = answer
            else:
                gates[i] = answer
        reads = await each(self._get(fresh[i].event_key, fresh[i].destination) for i in unread)
        for i, read in zip(unread, reads, strict=True):
            if read is None:  # deleted in between: someone is tidying up; try again later
                gates[i] = Held(None)
            elif isinstance(read, LedgerUnavailable | LedgerRejected):
                gates[i] = read
            else:
                known[i] = Existing(*read)
        takeovers: list[tuple[int, LedgerEntry, LedgerEntry, str]] = []
        for i, found in sorted(known.items()):
            current = found.entry
            if current.status in FINAL:
                gates[i] = Settled(current)
            elif current.held_at(now):
                gates[i] = Held(current)
            else:
                taken = replace(
                    current,
                    status=LedgerStatus.IN_FLIGHT,
                    message_id=fresh[i].message_id,
                    last_attempt=now,
                    lease_until=now + lease,
                    next_attempt=None,
                    dead_letter_reason=None,
                )
                takeovers.append((i, current, taken, found.etag))
        if takeovers:
            replaced = await self._replace_many([(t, etag) for _, _, t, etag in takeovers])
            for (i, current, taken, _), answer in zip(takeovers, replaced, strict=True):
                if isinstance(answer, str):
                    gates[i] = Claimed(taken, answer)
                elif answer is None:
                    gates[i] = Held(current)
                else:
                    gates[i] = answer
        assert all(g is not None for g in gates)
        return gates  # type: ignore[return-value]

    async def record_many(
        self,
        recorded: Sequence[tuple[Claimed, DestinationResult]],
        *,
        now: datetime,
        decided: Sequence[Decided | None] | None = None,
    ) -> list[LedgerFailure | None]:
        if len(recorded) == 1:
            return await super().record_many(recorded, now=now, decided=decided)
        decisions = _decisions(recorded, decided)
        answers = await self._replace_many(
            [
                (_recorded(claim, result, now, d), claim.etag)
                for (claim, result), d in zip(recorded, decisions, strict=True)
            ]
        )
        out: list[LedgerFailure | None] = []
        for (claim, result), answer in zip(recorded, answers, strict=True):
            if answer is None:
                _taken_over(claim, result)
            out.append(None if answer is None or isinstance(answer, str) else answer)
        return out

    async def _insert_many(self, entries: Sequence[LedgerEntry]) -> list[Inserted]:
        """Insert each row if absent (see `Inserted`); by default one by one, concurrently."""
        answers: list[Inserted] = [*await each(self._insert(e) for e in entries)]
        return answers

    async def _replace_many(
        self, pairs: Sequence[tuple[LedgerEntry, str | None]]
    ) -> list[Replaced]:
        """Replace each row that still has its ETag; by default one by one, concurrently."""
        answers: list[Replaced] = [*await each(self._replace(e, etag) for e, etag in pairs)]
        return answers
