"""Hypothesis strategies for message bodies: junk, broken JSON and near-valid contract v1 orders
for the accept stage, and broken, misrouted and near-valid delivery messages for the lanes.

Every strategy yields `bytes`, exactly what a publisher could put in a Service Bus message body.
Near-valid orders start from `samples/orders/valid/*.json` and are mutated; JSON is rendered by a
small writer of our own so a body can hold what `json.dumps` never writes: raw number tokens
(`1e309`, 5,000 digits, `NaN`), escaped lone surrogates, duplicate keys.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import strategies as st

from loyalty_client.customer import Customer
from order_processor.contract import MAX_BODY_BYTES, EventType, parse_order
from order_processor.delivery import DeliveryMessage
from order_processor.destinations import DESTINATIONS
from order_processor.model import enriched_event, event_key
from order_processor.routing import route

ROOT = Path(__file__).resolve().parent.parent
VALID_SAMPLE_PATHS = sorted((ROOT / "samples" / "orders" / "valid").glob("*.json"))
SAMPLE_BYTES: tuple[bytes, ...] = tuple(p.read_bytes() for p in VALID_SAMPLE_PATHS)
SAMPLE_DOCS: tuple[dict[str, Any], ...] = tuple(json.loads(b) for b in SAMPLE_BYTES)
KNOWN_CARDS: tuple[str, ...] = tuple(
    c["loyaltyCardNumber"]
    for c in json.loads((ROOT / "samples" / "loyalty" / "customers.json").read_text())
)

Path_ = tuple[str | int, ...]
T = TypeVar("T")


# --- a JSON writer that can say what json.dumps will not -------------------------------------


@dataclass(frozen=True, slots=True)
class Raw:
    """A token written verbatim: `1e309`, `NaN`, `"\\ud800"`, `[[[...]]]`."""

    text: str


@dataclass(frozen=True, slots=True)
class Pairs:
    """A JSON object written pair by pair, so the same key can appear twice."""

    pairs: tuple[tuple[str, Any], ...]


def render(value: Any, *, ascii_only: bool = True) -> str:
    """JSON text for `value` (dict, list, Pairs, Raw, Decimal, scalars); no recursion limit
    worries: deep nesting is built as Raw text, not as Python structures."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Decimal):
        return str(value)  # a JSON number: Decimal never prints NaN/inf here (see decimals())
    if isinstance(value, Pairs | dict):
        items = value.pairs if isinstance(value, Pairs) else tuple(value.items())
        return (
            "{"
            + ",".join(
                json.dumps(k, ensure_ascii=ascii_only) + ":" + render(v, ascii_only=ascii_only)
                for k, v in items
            )
            + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(render(v, ascii_only=ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)


def encode(value: Any, *, ascii_only: bool = True) -> bytes:
    return render(value, ascii_only=ascii_only).encode("utf-8", errors="surrogatepass")


# --- building blocks ------------------------------------------------------------------------


def pick(draw: st.DrawFn, choices: Sequence[T]) -> T:
    """One of `choices` (built per draw): cheaper than a fresh sampled_from, and shrinks to the
    first."""
    return choices[draw(st.integers(min_value=0, max_value=len(choices) - 1))]


#: field names the contract knows, so random documents sometimes look like orders
CONTRACT_KEYS = (
    "schemaVersion",
    "eventType",
    "orderId",
    "orderDate",
    "store",
    "customer",
    "currency",
    "subTotal",
    "shipping",
    "discount",
    "total",
    "paymentMethod",
    "coupon",
    "lines",
    "attributes",
    "lang",
    "id",
    "sku",
    "quantity",
    "unitPrice",
    "email",
    "loyaltyCardNumber",
)

TRICKY_STRINGS = (
    "",
    " ",
    "\t\n\r ",
    "\u200b",  # zero-width space
    "\u200d",  # zero-width joiner
    "\ufeff",  # BOM inside a string
    "\u202e100245",  # right-to-left override
    "\u05e9\u05dc\u05d5\u05dd",  # Hebrew
    "\u0627\u0644\u0633\u0644\u0627\u0645",  # Arabic
    "e\u0301\u0301\u0301",  # combining accents
    "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",  # ZWJ emoji family
    "\U0001f600",
    "\x00",
    "\x7f\x1b[31m",
    "\uffff\ufffe",
    "\U0010ffff",
    "\u2028\u2029",
    "\ud7ff\ue000",
    "ﬀ ﬁ Ⅻ ①",  # compatibility forms
    "İı",  # case mapping changes length
    "ß",
    "null",
    "NaN",
    "-0",
    "1e309",
    "../../etc/passwd",
    "%00%2F",
    "<script>alert(1)</script>",
    "'; DROP TABLE orders; --",
    "{{card}}",
    "ann.shopper@example.com",
    "6330001234567890",
)

#: escaped UTF-16 oddities only a hand-written JSON body can contain
RAW_STRING_TOKENS = (
    r'"\ud800"',
    r'"\udfff"',
    r'"\udc00\ud800"',
    r'"a\ud83d"',
    r'"\ud83d\ude00"',  # a valid pair
    r'"\u0000"',
    r'"\/\b\f\n\r\t"',
)

RAW_NUMBER_TOKENS = (
    "1e309",
    "-1e309",
    "1e-400",
    "1E400",
    "-0",
    "-0.0",
    "0e0",
    "0E-99999",
    "1e+2",
    "2.5E-3",
    "1e999999999999999999",  # the largest exponent Decimal takes
    "1e9999999999999999999",  # beyond it
    "1e-9999999999999999999",
    "123456789012345678901234567890",
    "99999999999999.9999",
    "100000000000000",
    "0.00001",
    "9" * 4300,
    "9" * 4301,
    "1" + "0" * 20_000,
    "0." + "0" * 5_000 + "1",
    "NaN",
    "Infinity",
    "-Infinity",
)

#: -?int(.frac)?(e[+-]?exp)? with digits and exponents far past what Decimal and the contract
#: take (built from parts: st.from_regex costs more per body than the function call)
json_number_text = st.one_of(
    st.sampled_from(RAW_NUMBER_TOKENS),
    st.builds(
        "{}{}{}{}".format,
        st.sampled_from(["", "-"]),
        st.integers(min_value=0, max_value=10**30),
        st.one_of(st.just(""), st.integers(min_value=0, max_value=10**30).map(".{}".format)),
        st.one_of(
            st.just(""),
            st.builds(
                "{}{}{}".format,
                st.sampled_from(["e", "E"]),
                st.sampled_from(["", "+", "-"]),
                st.integers(min_value=0, max_value=10**22),
            ),
        ),
    ),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
)

tricky_text = st.one_of(
    st.sampled_from(TRICKY_STRINGS),
    st.text(max_size=24),
    st.text(min_size=1, max_size=8).map(lambda s: s * 3),
    st.tuples(st.sampled_from(TRICKY_STRINGS), st.text(max_size=10)).map("".join),
)


#: strings around every length limit in the contract, and far beyond (100,000 emoji escaped
#: as JSON are over the body size limit on their own)
long_text = st.tuples(
    st.sampled_from("xé\U0001f600 "),
    st.sampled_from([16, 17, 32, 33, 128, 129, 254, 255, 512, 513, 1024, 1025, 5000, 100_000]),
).map(lambda t: t[0] * t[1])


def decimals(places: int = 4, limit: int = 10**13) -> st.SearchStrategy[Decimal]:
    return st.decimals(
        min_value=-limit, max_value=limit, places=places, allow_nan=False, allow_infinity=False
    )


json_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    tricky_text,
    decimals(places=6, limit=10**20),
    json_number_text.map(Raw),
    st.sampled_from(RAW_STRING_TOKENS).map(Raw),
)

json_keys = st.one_of(st.sampled_from(CONTRACT_KEYS), tricky_text, long_text)

json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(json_keys, children, max_size=4),
    ),
    max_leaves=6,
)


def nested(depth: int, kind: str, core: str = "1") -> str:
    """`[[[1]]]`-style text `depth` levels deep, built as text (no Python recursion)."""
    if kind == "list":
        return "[" * depth + core + "]" * depth
    if kind == "object":
        return '{"a":' * depth + core + "}" * depth
    return '[{"a":' * (depth // 2) + core + "}]" * (depth // 2)


DEPTHS = (1, 2, 50, 100, 500, 900, 990, 999, 1000, 1001, 1500, 3000, 10_000, 50_000, 100_000)

deep_value = st.builds(
    lambda depth, kind, core: Raw(nested(depth, kind, core)),
    st.sampled_from(DEPTHS),
    st.sampled_from(["list", "object", "mixed"]),
    st.sampled_from(["1", '"x"', "null", "[]", "{}", "1e309"]),
)


# --- datetimes ------------------------------------------------------------------------------

offsets = st.one_of(
    st.sampled_from([0, 1, -1, 60, -60, 330, 345, 840, -720, 23 * 60 + 59, -(23 * 60 + 59)]),
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
).map(lambda minutes: timezone(timedelta(minutes=minutes)))

moments = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59))


TIMESPECS = ("seconds", "minutes", "microseconds")


@st.composite
def aware_timestamps(draw: st.DrawFn) -> str:
    """RFC 3339 with an offset, in the spellings the contract accepts (the whole year range)."""
    moment = draw(moments).replace(tzinfo=draw(offsets))
    text = moment.isoformat(timespec=pick(draw, TIMESPECS))
    if moment.utcoffset() == timedelta(0) and draw(st.booleans()):
        text = text.replace("+00:00", pick(draw, ("Z", "z")))
    return text


aware_timestamp = aware_timestamps()


ODD_TIMESTAMPS = (
    "2026-11-20T14:25:00",  # naive
    "2026-11-20",
    "2026-11-20 14:25:00+00:00",
    "2026-11-20T14:25:00+0000",
    "2026-11-20T14:25:00+24:00",
    "2026-11-20T14:25:00-25:00",
    "2026-11-20T24:00:00Z",
    "2026-12-31T23:59:60Z",  # leap second
    "2026-02-29T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-23:59",
    "10000-01-01T00:00:00Z",
    "2026-11-20T14:25:00.1234567890123Z",
    "2026-11-20T14:25:00+00:00[Europe/London]",
    "\u0662\u0660\u0662\u0666-11-20T14:25:00Z",  # Arabic-Indic digits
    "now",
    "",
)

timestamps: st.SearchStrategy[Any] = st.one_of(
    aware_timestamp,
    st.sampled_from(ODD_TIMESTAMPS),
    moments.map(datetime.isoformat),  # naive
    st.integers(min_value=-(10**20), max_value=10**20),  # epoch numbers (pydantic reads them)
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1_700_000_000, 253_402_300_799, 253_402_300_800, -62_135_596_800]),
)


# --- mutating the samples ---------------------------------------------------------------------


def locations(document: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every node below the root: dict values and list items."""
    found: list[Path_] = []
    if isinstance(document, dict):
        for key, value in document.items():
            found.append((*prefix, key))
            found.extend(locations(value, (*prefix, key)))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found.append((*prefix, index))
            found.extend(locations(value, (*prefix, index)))
    return found


def containers(document: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every dict, the root included (where unknown fields can be added)."""
    found: list[Path_] = [prefix] if isinstance(document, dict) else []
    if isinstance(document, dict):
        for key, value in document.items():
            found.extend(containers(value, (*prefix, key)))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found.extend(containers(value, (*prefix, index)))
    return found


def node_at(document: Any, path: Path_) -> Any:
    node = document
    for part in path:
        node = node[part]
    return node


def set_at(document: Any, path: Path_, value: Any) -> None:
    # A copy: Hypothesis may hand out the same object twice, and later edits would change it.
    node_at(document, path[:-1])[path[-1]] = copy.deepcopy(value)


def drop_at(document: Any, path: Path_) -> None:
    del node_at(document, path[:-1])[path[-1]]


def _leaf_name(path: Path_) -> str:
    return next((p for p in reversed(path) if isinstance(p, str)), "")


MONEY_FIELDS = frozenset({"subTotal", "shipping", "discount", "total", "unitPrice", "value"})
INT_FIELDS = frozenset({"quantity", "regionId"})

sample_docs = st.sampled_from(SAMPLE_DOCS).map(copy.deepcopy)
ascii_only = st.booleans()


@st.composite
def mutated_orders(
    draw: st.DrawFn,
    values: st.SearchStrategy[Any],
    *,
    field_filter: Callable[[str], bool] | None = None,
    max_mutations: int = 2,
) -> bytes:
    """A valid sample with 1..max_mutations nodes (optionally only fields passing
    `field_filter`) replaced by `values`."""
    document = draw(sample_docs)
    for _ in range(draw(st.integers(min_value=1, max_value=max_mutations))):
        where = [
            p for p in locations(document) if field_filter is None or field_filter(_leaf_name(p))
        ]
        if not where:
            break
        set_at(document, pick(draw, where), draw(values))
    return encode(document, ascii_only=draw(ascii_only))


WRONG_TYPES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "bool": st.booleans(),
    "number": st.one_of(st.integers(), st.floats(allow_nan=False), decimals()),
    "string": tricky_text,
    "list": st.lists(json_scalars, max_size=3),
    "object": st.dictionaries(json_keys, json_scalars, max_size=3),
}
OTHER_TYPES: dict[str, st.SearchStrategy[Any]] = {
    own: st.one_of(*(s for kind, s in WRONG_TYPES.items() if kind != own)) for own in WRONG_TYPES
}


def json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else "object"


@st.composite
def wrong_types(draw: st.DrawFn) -> bytes:
    """One or two fields of a sample replaced by a value of another JSON type, or dropped."""
    document = draw(sample_docs)
    for _ in range(draw(st.integers(min_value=1, max_value=2))):
        path = pick(draw, locations(document))
        if draw(st.integers(min_value=0, max_value=4)) == 0:
            drop_at(document, path)
        else:
            set_at(document, path, draw(OTHER_TYPES[json_kind(node_at(document, path))]))
    return encode(document, ascii_only=draw(ascii_only))


numeric_values: st.SearchStrategy[Any] = st.one_of(
    json_number_text.map(Raw),
    json_number_text,  # the same, as a decimal string
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False),
    decimals(places=8, limit=10**20),
)


def _is_number_field(name: str) -> bool:
    return name in MONEY_FIELDS or name in INT_FIELDS


def _is_string_field(name: str) -> bool:
    return not _is_number_field(name)


def _is_order_date(name: str) -> bool:
    return name == "orderDate"


def huge_numbers() -> st.SearchStrategy[bytes]:
    """Money and integer fields set to huge, tiny, negative, exponent-laden or non-finite
    numbers, as JSON numbers and as strings."""
    return mutated_orders(numeric_values, field_filter=_is_number_field, max_mutations=3)


string_values: st.SearchStrategy[Any] = st.one_of(
    tricky_text,
    long_text,
    st.sampled_from(RAW_STRING_TOKENS).map(Raw),
    st.tuples(st.sampled_from(TRICKY_STRINGS), st.sampled_from(RAW_STRING_TOKENS)).map(
        lambda t: Raw(json.dumps(t[0])[:-1] + t[1][1:])  # a lone surrogate inside a string
    ),
)


def unicode_strings() -> st.SearchStrategy[bytes]:
    """String fields (ids, names, email, card, currency, lang...) set to unicode edge cases."""
    return mutated_orders(string_values, field_filter=_is_string_field, max_mutations=2)


def odd_datetimes() -> st.SearchStrategy[bytes]:
    return mutated_orders(timestamps, field_filter=_is_order_date, max_mutations=1)


@st.composite
def deep_nesting(draw: st.DrawFn) -> bytes:
    """Deeply nested arrays/objects: the whole body, or one field (known or unknown) of a sample."""
    deep = draw(deep_value)
    if draw(st.booleans()):
        return deep.text.encode()
    document = draw(sample_docs)
    if draw(st.booleans()):
        set_at(document, (*pick(draw, containers(document)), draw(json_keys)), deep)  # ignored
    else:
        set_at(document, pick(draw, locations(document)), deep)
    return encode(document)


# --- whole-body damage ------------------------------------------------------------------------

DAMAGE = (
    "truncate",
    "delete",
    "insert",
    "replace",
    "trailing",
    "single-quotes",
    "trailing-comma",
    "comments",
    "utf16",
    "latin1",
    "invalid-utf8",
    "nul",
    "concatenated",
)
json_texts = st.one_of(
    st.sampled_from(SAMPLE_BYTES), json_values.map(encode), unicode_strings(), wrong_types()
)
junk_bytes = st.one_of(
    st.binary(min_size=1, max_size=4),
    st.sampled_from([b"{", b"}", b"[", b"]", b'"', b",", b":", b"\\", b"\\u", b"\x00"]),
)
trailers = st.sampled_from([b" x", b"}", b"]", b",", b"\x00", b"{}", b"null"])
wide_codecs = st.sampled_from(["utf-16", "utf-16-le", "utf-32"])
bad_utf8 = st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"])


@st.composite
def malformed_json(draw: st.DrawFn) -> bytes:
    """Valid JSON text (a sample or random JSON) damaged at the byte level."""
    text = draw(json_texts)
    damage = pick(draw, DAMAGE)
    at = draw(st.integers(min_value=0, max_value=max(len(text) - 1, 0)))
    match damage:
        case "truncate":
            return text[:at]
        case "delete":
            return text[:at] + text[at + 1 :]
        case "insert":
            return text[:at] + draw(junk_bytes) + text[at:]
        case "replace":
            junk = draw(junk_bytes)
            return text[:at] + junk + text[at + len(junk) :]
        case "trailing":
            return text + draw(trailers)
        case "single-quotes":
            return text.replace(b'"', b"'")
        case "trailing-comma":
            return text.replace(b"}", b",}").replace(b"]", b",]")
        case "comments":
            return b"// ERP export\n" + text + b"\n/* end */"
        case "utf16":
            return text.decode("utf-8", errors="surrogatepass").encode(
                draw(wide_codecs), errors="surrogatepass"
            )
        case "latin1":
            return text.replace(b'"S042"', '"Zürich Straße"'.encode("latin-1"))
        case "invalid-utf8":
            return text[:at] + draw(bad_utf8) + text[at:]
        case "nul":
            return text[:at] + b"\x00" + text[at:]
        case _:
            return text + text


EDITS = ("drop", "replace", "junk", "deep-junk", "empty-lines")
FRAMES = ("none", "bom", "double-bom", "ws", "oversize", "at-limit")
DUPLICABLE_KEYS = (*CONTRACT_KEYS[:16], "x")
odd_lines = st.sampled_from([[], [{}], [None], [[]]])
duplicate_values = {
    key: st.one_of(json_values, st.sampled_from([d.get(key) for d in SAMPLE_DOCS]))
    for key in DUPLICABLE_KEYS
}
oversize_by = st.sampled_from([1, 2, 1000, 200_000])


@st.composite
def near_valid_orders(draw: st.DrawFn) -> bytes:
    """A sample with a mix of edits: drops, replacements, unknown junk fields, duplicate keys,
    whitespace and BOM framing, and bodies over the size limit."""
    document = draw(sample_docs)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        edit = pick(draw, EDITS)
        where = locations(document)
        if edit == "drop" and where:
            drop_at(document, pick(draw, where))
        elif edit == "replace" and where:
            set_at(document, pick(draw, where), draw(json_values))
        elif edit == "junk":
            set_at(
                document, (*pick(draw, containers(document)), draw(json_keys)), draw(json_values)
            )
        elif edit == "deep-junk":
            set_at(document, (*pick(draw, containers(document)), "x-erp"), draw(deep_value))
        elif edit == "empty-lines":
            set_at(document, ("lines",), draw(odd_lines))
    body: Any = document
    if draw(st.booleans()):  # duplicate keys: the last one wins in json.loads
        key = pick(draw, DUPLICABLE_KEYS)
        pairs = list(document.items())
        dup = (key, draw(duplicate_values[key]))
        pairs.insert(draw(st.integers(min_value=0, max_value=len(pairs))), dup)
        body = Pairs(tuple(pairs))
    text = encode(body, ascii_only=draw(ascii_only))
    frame = pick(draw, FRAMES)
    match frame:
        case "bom":
            return b"\xef\xbb\xbf" + text
        case "double-bom":
            return b"\xef\xbb\xbf\xef\xbb\xbf" + text
        case "ws":
            return b" \n\t\r" + text + b"\n\n"
        case "oversize" | "at-limit":
            # Pad with an ignored field so only the size is wrong (or exactly at the limit).
            over = draw(oversize_by) if frame == "oversize" else 0
            padding = MAX_BODY_BYTES + over - len(text) - len(',"pad":""')
            if padding < 0 or not text.endswith(b"}"):
                return text
            return text[:-1] + b',"pad":"' + b" " * padding + b'"}'
        case _:
            return text


# --- orders generated from the contract's own constraints --------------------------------

identifiers = st.one_of(
    st.text(min_size=1, max_size=12), st.text(alphabet="0123456789", min_size=1, max_size=18)
).map(lambda s: s if s.strip() else f"{s}x")
names = st.text(min_size=1, max_size=20).map(lambda s: s if s.strip() else f"{s}x")
prices = st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False, allow_infinity=False)
small_money = st.decimals(min_value=0, max_value=100, places=4, allow_nan=False)
attributes = st.dictionaries(st.text(max_size=10), st.text(max_size=16), max_size=2)
LINE_OPTIONAL: dict[str, st.SearchStrategy[Any]] = {
    "productId": identifiers,
    "name": names,
    "category": names,
    "attributes": attributes,
}


def as_money(draw: st.DrawFn, amount: Decimal) -> Any:
    """Money as the ERP may send it: a JSON number or a decimal string."""
    return amount if draw(st.booleans()) else str(amount)


@st.composite
def order_lines(draw: st.DrawFn) -> tuple[dict[str, Any], Decimal]:
    """One line, and what it costs (unit price x quantity - discount)."""
    price = draw(prices)
    quantity = draw(st.integers(min_value=1, max_value=100_000))
    discount = min(draw(small_money), price * quantity)
    line: dict[str, Any] = {
        "sku": draw(identifiers),
        "quantity": quantity,
        "unitPrice": as_money(draw, price),
    }
    if discount and draw(st.booleans()):
        line["discount"] = as_money(draw, discount)
    else:
        discount = Decimal(0)
    for key, strategy in LINE_OPTIONAL.items():
        if draw(st.booleans()):
            line[key] = draw(strategy)
    return line, price * quantity - discount


CUSTOMER_FIELDS: dict[str, st.SearchStrategy[str]] = {
    "loyaltyCardNumber": st.one_of(
        st.sampled_from(KNOWN_CARDS),
        st.text(alphabet="0123456789ABCXYZ -", min_size=2, max_size=30).map(lambda s: f"C{s}9"),
    ),
    "email": st.tuples(
        st.text(alphabet="abcxyz019.+_-", min_size=1, max_size=12),
        st.text(alphabet="abcxyz019-", min_size=1, max_size=12),
        st.sampled_from(["com", "co.uk", "example", "xn--p1ai"]),
    ).map(lambda t: f"{t[0]}@{t[1]}.{t[2]}"),
    "phone": st.text(alphabet="0123456789 ()-", min_size=5, max_size=20).map(lambda s: f"+4{s}7"),
    "customerId": identifiers,
}
customer_keys = st.lists(
    st.sampled_from(sorted(CUSTOMER_FIELDS)), min_size=1, max_size=4, unique=True
)
ORDER_OPTIONAL: dict[str, st.SearchStrategy[Any]] = {
    "paymentMethod": st.text(max_size=32),
    "coupon": st.fixed_dictionaries({"code": identifiers}, optional={"value": small_money}),
    "attributes": attributes,
    "lang": st.sampled_from(["en", "en-gb", "EN-GB", "de-de", "ar", "zh-cn"]),
    "schemaVersion": st.sampled_from(["1", "1.0", "1.1", "1.999"]),
}
STORE_OPTIONAL: dict[str, st.SearchStrategy[Any]] = {
    "name": names,
    "postcode": st.text(max_size=16),
    "regionId": st.integers(min_value=-(2**63), max_value=2**63),
}
event_types = st.sampled_from(list(EventType))
currencies = st.sampled_from(["GBP", "EUR", "USD", "JPY", "XXX"])


@st.composite
def generated_orders(draw: st.DrawFn) -> bytes:
    """Orders built from the contract's constraints (mostly valid, totals mostly adding up):
    random ids, unicode names, the full date range with any offset, exact money, every event
    type; they reach every destination's mapping."""
    event = draw(event_types)
    explicit_type = draw(st.booleans())
    needs_lines = event is EventType.ORDER_CREATED or not explicit_type
    drawn = draw(st.lists(order_lines(), min_size=1 if needs_lines else 0, max_size=3))
    shipping = draw(small_money)
    total = sum((cost for _, cost in drawn), Decimal(0)) + shipping
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        total += draw(small_money)  # a total that does not add up (sent as it is)
    order: dict[str, Any] = {
        "orderId": draw(identifiers),
        "orderDate": draw(aware_timestamp),
        "store": {"id": draw(identifiers)},
        "customer": {key: draw(CUSTOMER_FIELDS[key]) for key in draw(customer_keys)},
        "currency": draw(currencies),
        "shipping": as_money(draw, shipping),
        "total": as_money(draw, total),
        "lines": [line for line, _ in drawn],
    }
    if explicit_type:
        order["eventType"] = event.value
    for key, strategy in ORDER_OPTIONAL.items():
        if draw(st.booleans()):
            order[key] = draw(strategy)
    for key, strategy in STORE_OPTIONAL.items():
        if draw(st.booleans()):
            order["store"][key] = draw(strategy)
    return encode(order, ascii_only=draw(ascii_only))


# --- application properties on retry copies --------------------------------------------------

RETRY_PROPERTY_KEYS = ("retryAttempt", "firstSeenUtc", "originalMessageId", "destination")


def _retry_properties(min_size: int) -> st.SearchStrategy[tuple[tuple[str, str], ...]]:
    """Application properties as sorted (name, value) pairs (hashable, so batches can be
    unique): the retry bookkeeping's names and others, with any text for values."""
    return st.dictionaries(
        st.one_of(st.sampled_from(RETRY_PROPERTY_KEYS), st.text(min_size=1, max_size=20)),
        st.one_of(
            st.text(max_size=40),
            st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
            st.sampled_from(
                [
                    "profile_store",
                    "accept",
                    "profile_store,esputnik",
                    ",,,",
                    "9999-12-31T23:59:59",
                    "0001-01-01T00:00:00+23:59",
                    datetime(2026, 11, 20, tzinfo=UTC).isoformat(),
                    "-1",
                    "1e9",
                ]
            ),
        ),
        min_size=min_size,
        max_size=5,
    ).map(lambda d: tuple(sorted(d.items())))


retry_properties = _retry_properties(0)
#: at least one property (the few valid delivery messages would otherwise repeat)
some_retry_properties = _retry_properties(1)


# --- delivery messages: what the lanes read ----------------------------------------------------

LANES: tuple[str, ...] = tuple(DESTINATIONS)
_CUSTOMERS = {
    c["loyaltyCardNumber"]: Customer(
        customer_id=c.get("customerId"),
        email=c.get("email"),
        phone=c.get("phone"),
        first_name=c.get("firstName"),
        last_name=c.get("lastName"),
    )
    for c in json.loads((ROOT / "samples" / "loyalty" / "customers.json").read_text())
}
_ACCEPTED_AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def _delivery_documents() -> tuple[dict[str, Any], ...]:
    """Every (valid sample, routed destination) as the accept stage publishes it, as a JSON
    document (numbers kept exact), with the sample customers looked up as accept would."""
    documents = []
    for body in SAMPLE_BYTES:
        order = parse_order(body)
        ref = order.customer
        found = _CUSTOMERS.get(ref.loyalty_card_number or "") if not ref.email else None
        event = enriched_event(order, found, key=event_key(order), message_id="m-1")
        for name in LANES:
            if route(name, event.event_type):
                message = DeliveryMessage.of(
                    event,
                    destination=name,
                    accepted_at=_ACCEPTED_AT,
                    order_enqueued_at=_ACCEPTED_AT - timedelta(seconds=2),
                )
                documents.append(json.loads(message.encode(), parse_float=Decimal))
    return tuple(documents)


DELIVERY_DOCS = _delivery_documents()
DELIVERY_FIELDS = tuple(DELIVERY_DOCS[0])

delivery_docs = st.sampled_from(DELIVERY_DOCS).map(copy.deepcopy)

#: (body, lane): a message and the lane whose subscription hands it over
LaneMessage = tuple[bytes, str]


@st.composite
def not_deliveries(draw: st.DrawFn) -> LaneMessage:
    """Bodies that are no delivery message at all, on any lane: random bytes, damaged JSON,
    arbitrary JSON, deep nesting, out-of-range numbers, or an order (contract v1) where a
    delivery message belongs."""
    body = draw(
        st.one_of(
            st.binary(max_size=512),
            malformed_json(),
            json_values.map(encode),
            deep_value.map(lambda raw: raw.text.encode()),
            json_number_text.map(str.encode),
            st.sampled_from(SAMPLE_BYTES),
            near_valid_orders(),
        )
    )
    return body, pick(draw, LANES)


#: deliveryVersion values: other majors, malformed ones, other JSON types, and readable 1.x
VERSION_VALUES: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(
        [
            *("2.0", "0.9", "0", "10", "2", "1.0.0", "", "v1", "1.", ".1", "01.0", "-1.0"),
            *("1", "1.1", "1.999999", "1.0000001", "0001", "1.0 ", " 1.0", "1e0", "9999999.0"),
            "\uff11.0",  # a full-width digit
        ]
    ),
    st.builds("{}.{}".format, st.integers(0, 10**7), st.integers(0, 10**7)),
    st.integers(0, 10**7).map(str),
    tricky_text,
    json_scalars,
)


@st.composite
def delivery_versions(draw: st.DrawFn) -> LaneMessage:
    """A delivery message on its own lane with deliveryVersion changed (or dropped: 1.0)."""
    document = draw(delivery_docs)
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        del document["deliveryVersion"]
    else:
        document["deliveryVersion"] = draw(VERSION_VALUES)
    return encode(document, ascii_only=draw(ascii_only)), document["destination"]


@st.composite
def misrouted_deliveries(draw: st.DrawFn) -> LaneMessage:
    """A delivery message on a lane it is not for: another lane's message on this lane's
    subscription (with an unknown field, which lanes ignore, so they differ), or a `destination`
    that is not this lane (another name, junk, another type)."""
    document = draw(delivery_docs)
    own = document["destination"]
    others = [name for name in LANES if name != own]
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        document[draw(st.text(min_size=1, max_size=8))] = draw(json_scalars)
        return encode(document, ascii_only=draw(ascii_only)), pick(draw, others)
    document["destination"] = draw(
        st.one_of(
            st.sampled_from([*others, "accept", "", own.upper(), f"{own}x", "*", "%"]),
            tricky_text,
            json_scalars,
        ).filter(lambda value: not (isinstance(value, str) and value.strip() == own))
    )
    return encode(document, ascii_only=draw(ascii_only)), own


DELIVERY_EDITS = ("drop", "replace", "wrong-type", "junk", "odd-time", "order-field")
DELIVERY_TIMES = ("acceptedAt", "orderEnqueuedAt")


@st.composite
def near_valid_deliveries(draw: st.DrawFn) -> LaneMessage:
    """A delivery message on its own lane with a few edits anywhere in it (the enriched order
    included): drops, junk values, other types, unknown fields, odd timestamps."""
    document = draw(delivery_docs)
    lane = document["destination"]
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        edit = pick(draw, DELIVERY_EDITS)
        where = locations(document)
        path = pick(draw, where)
        if edit == "drop":
            drop_at(document, path)
        elif edit == "replace":
            set_at(document, path, draw(json_values))
        elif edit == "wrong-type":
            set_at(document, path, draw(OTHER_TYPES[json_kind(node_at(document, path))]))
        elif edit == "junk":
            set_at(
                document, (*pick(draw, containers(document)), draw(json_keys)), draw(json_values)
            )
        elif edit == "odd-time":
            document[pick(draw, DELIVERY_TIMES)] = draw(timestamps)
        elif isinstance(document.get("order"), dict) and document["order"]:
            order_paths = locations(document["order"], ("order",))
            set_at(
                document, pick(draw, order_paths), draw(st.one_of(numeric_values, string_values))
            )
    return encode(document, ascii_only=draw(ascii_only)), lane


def valid_deliveries() -> st.SearchStrategy[LaneMessage]:
    """Delivery messages exactly as the accept stage writes them, each on its own lane."""
    return delivery_docs.map(lambda d: (encode(d), str(d["destination"])))
