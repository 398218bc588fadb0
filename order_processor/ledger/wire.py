"""Azure Table Storage on the wire: entities, and TableStore, a lean REST client on one aiohttp
pool."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import re
import time
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import aiohttp
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from yarl import URL

from order_processor.ledger.entries import LedgerEntry, LedgerStatus
from order_processor.ledger.keys import partition_key

# -- Azure Table Storage: the rows -----------------------------------------------------------

_DATE_TYPE = "Edm.DateTime"
#: the most operations one entity group transaction may hold (docs/ledger.md)
EGT_MAX_ENTITIES = 100


def _when(value: datetime) -> str:
    """An Edm.DateTime value: ISO 8601 in UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.utcoffset():
        value = value.astimezone(UTC)
    return value.isoformat().replace("+00:00", "Z")


def _parse_when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def to_entity(entry: LedgerEntry) -> dict[str, Any]:
    """The row as Table Storage's JSON: PartitionKey = `<destination>-<bucket>`, RowKey = event
    key. Absent values are left out, so a replace removes them."""
    entity: dict[str, Any] = {
        "PartitionKey": partition_key(entry.destination, entry.event_key),
        "RowKey": entry.event_key,
        "Status": entry.status.value,
        "Attempts": entry.attempts,
    }
    for name, value in (
        ("MessageId", entry.message_id),
        ("LastError", entry.last_error),
        ("HttpStatus", entry.http_status),
        ("ResponseId", entry.response_id),
        ("DeadLetterReason", entry.dead_letter_reason),
    ):
        if value is not None:
            entity[name] = value
    for name, when in (
        ("FirstAttemptUtc", entry.first_attempt),
        ("LastAttemptUtc", entry.last_attempt),
        ("LeaseUntilUtc", entry.lease_until),
        ("NextAttemptUtc", entry.next_attempt),
    ):
        if when is not None:
            entity[name] = _when(when)
            entity[name + "@odata.type"] = _DATE_TYPE
    return entity


def from_entity(entity: dict[str, Any], *, legacy: bool = False) -> LedgerEntry:
    """A row as read back (JSON without type annotations: the dates are ISO strings); `legacy`:
    a row of the layout before the lanes (PartitionKey = event key, RowKey = destination)."""
    if legacy:
        event_key, destination = str(entity["PartitionKey"]), str(entity["RowKey"])
    else:
        event_key = str(entity["RowKey"])
        destination = str(entity["PartitionKey"]).rpartition("-")[0]
    http_status = entity.get("HttpStatus")
    return LedgerEntry(
        event_key=event_key,
        destination=destination,
        status=LedgerStatus(entity["Status"]),
        message_id=entity.get("MessageId"),
        attempts=int(entity.get("Attempts", 0)),
        first_attempt=_parse_when(entity.get("FirstAttemptUtc")),
        last_attempt=_parse_when(entity.get("LastAttemptUtc")),
        lease_until=_parse_when(entity.get("LeaseUntilUtc")),
        last_error=entity.get("LastError"),
        http_status=None if http_status is None else int(http_status),
        response_id=entity.get("ResponseId"),
        next_attempt=_parse_when(entity.get("NextAttemptUtc")),
        dead_letter_reason=entity.get("DeadLetterReason"),
    )


# -- Azure Table Storage: the wire -----------------------------------------------------------

_API_VERSION = "2019-02-02"
_STORAGE_SCOPE = "https://storage.azure.com/.default"
_JSON = "application/json"
_NO_METADATA = "application/json;odata=nometadata"
#: refresh a bearer token this long before it expires (as azure-core's token policy does)
_TOKEN_REFRESH_SECONDS = 300


class StorageError(Exception):
    """Table Storage answered with an error status (the error code and message from its body)."""

    def __init__(self, status: int, code: str | None, message: str = "") -> None:
        super().__init__(f"HTTP {status} {code or ''}".strip())
        self.status = status
        self.code = code
        self.message = message


class BatchError(StorageError):
    """An entity group transaction failed as a whole; `index` is the operation that failed it,
    when the service said (its message starts with `<index>:`)."""

    def __init__(self, status: int, code: str | None, message: str, index: int | None) -> None:
        super().__init__(status, code, message)
        self.index = index


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def error(self) -> StorageError:
        code, message = _odata_error(self.body.decode(errors="replace"))
        return StorageError(self.status, code or self.headers.get("x-ms-error-code"), message)


class _Authorization:
    """The Authorization of one attempt: Shared Key (an HMAC-SHA256 of the verb, Content-MD5,
    Content-Type, x-ms-date and /account + the path as sent: the string azure-data-tables'
    SharedKeyCredentialPolicy signs, checked by Azurite), a SAS (in the query instead), or a
    bearer token from a token credential (the app's managed identity), kept until 5 minutes
    before it expires and fetched by one request at a time."""

    def __init__(self, credential: object) -> None:
        self.sas: str | None = None
        self._key: bytes | None = None
        self._token_credential: Any = None
        self._token: Any = None
        self._token_lock = asyncio.Lock()
        if isinstance(credential, AzureNamedKeyCredential):
            name, key = credential.named_key
            self._account, self._prefix = "/" + name, f"SharedKey {name}:"
            self._key = base64.b64decode(key)
        elif isinstance(credential, AzureSasCredential):
            self.sas = credential.signature.lstrip("?")
        elif hasattr(credential, "get_token"):
            self._token_credential = credential
        else:
            raise TypeError(f"unsupported ledger credential: {type(credential).__name__}")

    async def header(self, method: str, url: URL, headers: Mapping[str, str]) -> str | None:
        if self._key is not None:
            signed = "\n".join(
                (
                    method,
                    headers.get("Content-MD5", ""),
                    headers.get("Content-Type", ""),
                    headers["x-ms-date"],
                    self._account + url.raw_path,
                )
            )
            digest = hmac.new(self._key, signed.encode(), hashlib.sha256).digest()
            return self._prefix + base64.b64encode(digest).decode()
        if self._token_credential is not None:
            return "Bearer " + await self._bearer()
        return None

    async def _bearer(self) -> str:
        token = self._token
        if token is None or token.expires_on - _TOKEN_REFRESH_SECONDS <= time.time():
            async with self._token_lock:
                token = self._token
                if token is None or token.expires_on - _TOKEN_REFRESH_SECONDS <= time.time():
                    token = self._token = await self._token_credential.get_token(_STORAGE_SCOPE)
        return str(token.token)


def _key(value: str) -> str:
    """A key inside `Table(PartitionKey='...',RowKey='...')`: quotes doubled, then URL-encoded."""
    return quote(value.replace("'", "''"), safe="")


def literal(value: str) -> str:
    """A string literal in a $filter."""
    return "'" + value.replace("'", "''") + "'"


_INDEX = re.compile(r"^(\d+):")
#: statuses worth another attempt (azure-core's RetryPolicy), and those a POST is retried on
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_POST_RETRY_STATUSES = frozenset({500, 503, 504})


class TableStore:
    """The ledger's few Table Storage operations over its REST API: one aiohttp connection pool
    per process, no SDK pipeline.

    Why not azure-data-tables' TableClient: per request, its generated serializer, the entity
    (de)serialisation and a pipeline of thirteen policies cost ~0.7 ms of CPU here, and its
    aiohttp session, created with trust_env, reads ~/.netrc and the proxy variables in a worker
    thread twice per request. Why not azure-core's pipeline either (with only the policies the
    ledger needs it was the first step): it still cost 37% of each request's CPU (0.39 against
    0.25 ms, docs/performance.md, "The ledger's cost"), which the single-message path pays twice
    per delivery. What the ledger needs from it is kept, as it was configured:

    - retries (`retry_total`, 2) on azure-core's rules: GET and PUT after a connection or read
      error and on 408, 429, 500, 502, 503, 504; POST (insert, transactions) on 500, 503, 504
      only; any error status with Retry-After after that delay; otherwise 0 s, then 1.6 s;
    - timeouts: connect 5 s, each read 10 s;
    - a client request id (x-ms-client-request-id, the same for every attempt), the storage
      headers, the credential (Shared Key, SAS or a token: `_Authorization`);
    - proxies from the environment, only when the environment sets one (trust_env costs two
      thread hops per request).

    Left out: distributed tracing (the lane's span covers its ledger calls), HTTP logging (the
    app keeps the azure loggers at WARNING), redirects and secondary-location routing (the
    ledger uses the primary endpoint).
    """

    def __init__(
        self,
        endpoint: str,
        table: str,
        *,
        credential: object,
        retry_total: int = 2,
        retry_backoff: float = 0.8,
        connection_timeout: float = 5,
        read_timeout: float = 10,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
        user_agent: str = "order-processor-ledger",
        owns_credential: bool = False,
    ) -> None:
        self.table = table
        self._account_url = endpoint.rstrip("/")
        self._table_url = f"{self._account_url}/{table}"
        self._auth = _Authorization(credential)
        self._credential = credential
        self._owns_credential = owns_credential
        self._retry_total = retry_total
        self._backoff = retry_backoff
        self._timeout = aiohttp.ClientTimeout(
            sock_connect=connection_timeout, sock_read=read_timeout
        )
        self._trace_configs = list(trace_configs)
        self._fixed = {
            "x-ms-version": _API_VERSION,
            "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
            "User-Agent": user_agent,
        }
        self._session: aiohttp.ClientSession | None = None
        self._second = -1
        self._date = ""

    @classmethod
    def from_connection_string(cls, connection: str, table: str, **options: Any) -> TableStore:
        """A storage connection string (or UseDevelopmentStorage=true), read the way
        azure-data-tables reads it."""
        from azure.data.tables import TableClient

        parsed = TableClient.from_connection_string(connection, table_name=table)
        try:
            return cls(parsed.url, table, credential=parsed.credential, **options)
        finally:
            parsed.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._owns_credential:
            close = getattr(self._credential, "close", None)
            if close is not None:
                await close()

    def _url(self, text: str) -> URL:
        """A URL built here, already percent-encoded (signed as sent)."""
        if self._auth.sas:
            text += ("&" if "?" in text else "?") + self._auth.sas
        return URL(text, encoded=True)

    def _x_ms_date(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second, self._date = second, formatdate(second, usegmt=True)
        return self._date

    async def _send(
        self, method: str, url: URL, headers: dict[str, str], body: bytes | None = None
    ) -> _Answer:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=bool(urllib.request.getproxies()),
                trace_configs=self._trace_configs or None,
            )
        headers |= self._fixed
        headers["x-ms-client-request-id"] = str(uuid.uuid4())
        retries = 0
        while True:
            headers["x-ms-date"] = self._x_ms_date()
            authorization = await self._auth.header(method, url, headers)
            if authorization:
                headers["Authorization"] = authorization
            try:
                async with self._session.request(method, url, headers=headers, data=body) as got:
                    answer = _Answer(got.status, got.headers, await got.read())
            except (TimeoutError, aiohttp.ClientError):
                if retries >= self._retry_total or method == "POST":
                    raise
                delay = self._backoff * 2**retries if retries else 0.0
            else:
                if retries >= self._retry_total or answer.status < 400:
                    return answer
                retry_after = _retry_after(answer.headers.get("Retry-After"))
                if retry_after is not None:
                    delay = retry_after
                elif answer.status in (
                    _POST_RETRY_STATUSES if method == "POST" else _RETRY_STATUSES
                ):
                    delay = self._backoff * 2**retries if retries else 0.0
                else:
                    return answer
            retries += 1
            await asyncio.sleep(delay)

    async def create_table(self) -> None:
        answer = await self._send(
            "POST",
            self._url(f"{self._account_url}/Tables"),
            {"Content-Type": _JSON, "Accept": _NO_METADATA, "Prefer": "return-no-content"},
            json.dumps({"TableName": self.table}).encode(),
        )
        if answer.status not in (201, 204, 409):
            raise answer.error()

    async def insert(self, entity: dict[str, Any]) -> str | None:
        """The new row's ETag, or None when a row with its keys exists."""
        answer = await self._send(
            "POST",
            self._url(self._table_url),
            {"Content-Type": _JSON, "Accept": _NO_METADATA, "Prefer": "return-no-content"},
            json.dumps(entity).encode(),
        )
        if answer.status in (201, 204):
            return answer.headers["ETag"]
        if answer.status == 409:
            return None
        raise answer.error()

    def _entity_url(self, partition: str, row: str) -> str:
        return f"{self._table_url}(PartitionKey='{_key(partition)}',RowKey='{_key(row)}')"

    async def get(self, partition: str, row: str) -> tuple[dict[str, Any], str] | None:
        answer = await self._send(
            "GET", self._url(self._entity_url(partition, row)), {"Accept": _NO_METADATA}
        )
        if answer.status == 200:
            return json.loads(answer.body), answer.headers["ETag"]
        if answer.status == 404:
            return None
        raise answer.error()

    async def replace(self, entity: dict[str, Any], etag: str | None) -> str | None:
        """The new ETag, or None when the row no longer has `etag` (or is gone)."""
        answer = await self._send(
            "PUT",
            self._url(self._entity_url(entity["PartitionKey"], entity["RowKey"])),
            {"Content-Type": _JSON, "Accept": _NO_METADATA, "If-Match": etag or "*"},
            json.dumps(entity).encode(),
        )
        if answer.status == 204:
            return answer.headers["ETag"]
        if answer.status in (404, 412):
            return None
        raise answer.error()

    async def query(self, where: str) -> list[dict[str, Any]]:
        """Every row matching an OData $filter, following continuation tokens."""
        found: list[dict[str, Any]] = []
        params = "$filter=" + quote(where, safe="")
        while True:
            answer = await self._send(
                "GET", self._url(f"{self._table_url}()?{params}"), {"Accept": _NO_METADATA}
            )
            if answer.status != 200:
                raise answer.error()
            found += json.loads(answer.body).get("value", [])
            partition = answer.headers.get("x-ms-continuation-NextPartitionKey")
            if not partition:
                return found
            params = "$filter=" + quote(where, safe="") + "&NextPartitionKey=" + quote(partition)
            row = answer.headers.get("x-ms-continuation-NextRowKey")
            if row:
                params += "&NextRowKey=" + quote(row)

    async def transact(self, operations: Sequence[tuple[dict[str, Any], str | None]]) -> list[str]:
        """One entity group transaction (all rows in one partition, at most 100): each entity is
        created (etag None) or replaced if it still has its ETag. Every new ETag, in order; or
        BatchError when it failed as a whole."""
        batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
        parts = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"]
        for index, (entity, etag) in enumerate(operations):
            if etag is None:
                line = f"POST {self._table_url} HTTP/1.1\r\nPrefer: return-no-content\r\n"
            else:
                url = self._entity_url(entity["PartitionKey"], entity["RowKey"])
                line = f"PUT {url} HTTP/1.1\r\nIf-Match: {etag}\r\n"
            parts.append(
                f"--{changeset}\r\nContent-Type: application/http\r\n"
                f"Content-Transfer-Encoding: binary\r\nContent-ID: {index}\r\n\r\n"
                f"{line}Content-Type: {_JSON}\r\nAccept: {_NO_METADATA}\r\n"
                f"DataServiceVersion: 3.0;\r\n\r\n{json.dumps(entity)}\r\n"
            )
        parts.append(f"--{changeset}--\r\n--{batch}--\r\n")
        answer = await self._send(
            "POST",
            self._url(f"{self._account_url}/$batch"),
            {"Content-Type": f"multipart/mixed; boundary={batch}", "Accept": _JSON},
            "".join(parts).encode(),
        )
        if answer.status != 202:
            raise answer.error()
        answers = _batch_answers(answer.body.decode(errors="replace"))
        failed = [a for a in answers if not 200 <= a[0] < 300]
        if failed or len(answers) != len(operations):
            status, _, body = failed[0] if failed else (500, None, "")
            code, message = _odata_error(body)
            match = _INDEX.match(message)
            raise BatchError(status, code, message, int(match.group(1)) if match else None)
        return [str(etag) for _, etag, _ in answers]


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (a number of seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _odata_error(body: str) -> tuple[str | None, str]:
    """The code and message of Table Storage's JSON error body."""
    try:
        error = json.loads(body)["odata.error"]
        return str(error.get("code")), str(error.get("message", {}).get("value", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, ""


_PART = re.compile(r"^HTTP/1\.[01] (\d{3})", re.MULTILINE)
_ETAG = re.compile(r"^ETag:\s*(.+?)\s*$", re.MULTILINE | re.IGNORECASE)


def _batch_answers(text: str) -> list[tuple[int, str | None, str]]:
    """Each operation's status, ETag and body in a multipart/mixed batch response."""
    answers: list[tuple[int, str | None, str]] = []
    starts = [m.start() for m in _PART.finditer(text)] + [len(text)]
    for begin, end in itertools.pairwise(starts):
        part = text[begin:end]
        head, _, body = part.replace("\r\n", "\n").partition("\n\n")
        etag = _ETAG.search(head)
        answers.append((int(part[9:12]), etag.group(1) if etag else None, body.split("\n--", 1)[0]))
    return answers
