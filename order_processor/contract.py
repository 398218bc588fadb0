"""Inbound message contract v1: what the ERP publishes to the `orders` topic.

Minor versions only add optional fields, so every 1.x message is read (and a 1.0 message stays
valid): 1.1 adds each line's `url` and `imageUrl` (the product page and image, which eSputnik's
events need). Money that cannot be negative (`total`, `subTotal`, `shipping`, a line's
`unitPrice`) is refused when it is, naming the field.

The JSON Schema in `schemas/order-message.v1.schema.json` is generated from these models
(`python -m order_processor schema`); change the models, then regenerate.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel

#: ORDERS_MAX_MESSAGE_BYTES' default: what a Service Bus Standard namespace carries (256 KB);
#: Premium entities take up to 100 MB (their maxMessageSizeInKilobytes), so raise it there.
MAX_BODY_BYTES = 256 * 1024
MAX_LINES = 1000
SUPPORTED_MAJOR = 1


class EventType(StrEnum):
    ORDER_CREATED = "OrderCreated"
    ORDER_UPDATED = "OrderUpdated"
    ORDER_DELIVERED = "OrderDelivered"
    ORDER_CANCELLED = "OrderCancelled"


Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=512)]
# JSON number or decimal string; the schema says so explicitly for the ERP's validators.
Money = Annotated[
    Decimal,
    Field(allow_inf_nan=False, max_digits=18, decimal_places=4),
    WithJsonSchema(
        {"anyOf": [{"type": "number"}, {"type": "string", "pattern": r"^-?\d{1,14}(\.\d{1,4})?$"}]}
    ),
]


def _not_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise ValueError("must not be negative")
    return value


# Amounts that are never negative: an order total, subtotal, shipping charge or unit price below
# zero is an ERP error (a refund is a separate document), refused at the door.
NonNegativeMoney = Annotated[
    Decimal,
    Field(allow_inf_nan=False, max_digits=18, decimal_places=4),
    AfterValidator(_not_negative),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\d{1,14}(\.\d{1,4})?$"},
            ]
        }
    ),
]
MAX_URL_LENGTH = 2048
URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#@]+([/?#]\S*)?$"


def _absolute_http_url(value: str) -> str:
    """An absolute http(s) URL with a host (the value itself is never echoed)."""
    if any(character.isspace() for character in value):
        raise ValueError("must be an absolute http(s) URL without spaces")
    parts = urlsplit(value)
    if parts.scheme.lower() not in {"http", "https"}:
        raise ValueError("must be an absolute http:// or https:// URL")
    try:
        host, _ = parts.hostname, parts.port
    except ValueError:
        raise ValueError("must be an absolute http(s) URL with a valid port") from None
    if not host or parts.username is not None or parts.password is not None:
        raise ValueError("must be an absolute http(s) URL naming a host (and no user name)")
    return value


# A product page or image link (contract 1.1), as the shop publishes it.
LinkUrl = Annotated[
    str,
    StringConstraints(max_length=MAX_URL_LENGTH),
    AfterValidator(_absolute_http_url),
    Field(json_schema_extra={"format": "uri", "pattern": URL_PATTERN}),
]
# RFC 3339 with an offset: naive local times are ambiguous across DST and are rejected.
AWARE_PATTERN = r"^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|z|[+-]\d\d:?\d\d)$"
Attributes = Annotated[
    dict[
        Annotated[str, StringConstraints(max_length=128)],
        Annotated[str, StringConstraints(max_length=1024)],
    ],
    Field(max_length=100),
]


class ContractModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
        str_strip_whitespace=True,
    )


class Store(ContractModel):
    id: Identifier
    name: Name | None = None
    postcode: Annotated[str, StringConstraints(max_length=16)] | None = None
    region_id: Annotated[int, Field(strict=True)] | None = None


class CustomerRef(ContractModel):
    """How the ERP identifies the customer; at least one identifier is required."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": [name]}
                for name in ("loyaltyCardNumber", "email", "phone", "customerId")
            ]
        }
    )

    loyalty_card_number: (
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9 -]{4,32}$")] | None
    ) = None
    email: (
        Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
        | None
    ) = None
    phone: (
        Annotated[str, StringConstraints(max_length=32, pattern=r"^\+?[0-9 ()-]{6,32}$")] | None
    ) = None
    customer_id: Identifier | None = None

    @model_validator(mode="after")
    def _needs_an_identifier(self) -> Self:
        if not (self.loyalty_card_number or self.email or self.phone or self.customer_id):
            raise ValueError("needs at least one of loyaltyCardNumber, email, phone, customerId")
        return self


class Coupon(ContractModel):
    code: Identifier
    value: Money = Decimal(0)


class OrderLine(ContractModel):
    sku: Identifier
    product_id: Identifier | None = None
    name: Name | None = None
    category: Name | None = None
    quantity: Annotated[int, Field(strict=True, gt=0, le=100_000)]
    unit_price: NonNegativeMoney
    discount: Money = Decimal(0)
    attributes: Attributes = Field(default_factory=dict)
    url: Annotated[
        LinkUrl | None,
        Field(description="contract 1.1: the product's page, an absolute http(s) URL"),
    ] = None
    image_url: Annotated[
        LinkUrl | None,
        Field(description="contract 1.1: the product's image, an absolute http(s) URL"),
    ] = None

    @model_serializer(mode="wrap")
    def _without_absent_links(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A line without the 1.1 links serialises exactly as in 1.0: the event key (a hash of
        the order) of a message published before the upgrade stays the same, so its
        redelivery is still recognised as already sent."""
        data: dict[str, Any] = handler(self)
        for key in ("url", "imageUrl", "image_url"):
            if key in data and data[key] is None:
                del data[key]
        return data


class InStoreOrder(ContractModel):
    """One order event from the ERP (contract v1). One message carries one order, as UTF-8 JSON
    of at most ORDERS_MAX_MESSAGE_BYTES (default 262144 bytes, the Service Bus Standard tier's
    limit; up to the entity's maximum message size on Premium)."""

    schema_version: Annotated[
        str,
        StringConstraints(pattern=r"^\d{1,6}(\.\d{1,6})?$"),
        Field(description="`1.0` or `1.1` (adds lines[].url and imageUrl); any 1.x is read"),
    ] = "1.0"
    event_type: EventType = EventType.ORDER_CREATED
    order_id: Identifier
    order_date: Annotated[AwareDatetime, Field(json_schema_extra={"pattern": AWARE_PATTERN})]
    store: Store
    customer: CustomerRef
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    sub_total: NonNegativeMoney | None = None
    shipping: NonNegativeMoney = Decimal(0)
    discount: Money = Decimal(0)
    total: NonNegativeMoney
    payment_method: Annotated[str, StringConstraints(max_length=32)] | None = None
    coupon: Coupon | None = None
    lines: Annotated[list[OrderLine], Field(max_length=MAX_LINES)] = Field(default_factory=list)
    attributes: Attributes = Field(default_factory=dict)
    lang: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[a-z]{2})?$", to_lower=True)] = (
        "en-gb"
    )

    @field_validator("schema_version")
    @classmethod
    def _supported_major(cls, value: str) -> str:
        return check_major(value, supported=SUPPORTED_MAJOR, reader="app")

    @field_validator("order_date")
    @classmethod
    def _representable_in_utc(cls, value: datetime) -> datetime:
        # 0001-01-01T00:00+00:01 is "aware" but has no UTC form; every destination needs one.
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError("date is out of range once converted to UTC") from None
        return value

    @model_validator(mode="after")
    def _created_has_lines(self) -> Self:
        if self.event_type is EventType.ORDER_CREATED and not self.lines:
            raise ValueError("lines: OrderCreated needs at least one line")
        return self

    @property
    def lines_total(self) -> Decimal:
        return sum(
            (line.unit_price * line.quantity - line.discount for line in self.lines), Decimal(0)
        )


class InvalidMessage(Exception):
    """The body is not a contract v1 order; `description` names the field and the problem."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _field_path(loc: tuple[int | str, ...]) -> str:
    """`lines[0].unitPrice`; keys of free-form `attributes` are data (maybe personal, maybe
    huge), so they are never echoed: `attributes[…]`."""
    path = ""
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            path += " (key)"
        elif previous == "attributes":
            path += "[…]"
        else:
            path += f".{to_camel(part)}" if path else to_camel(part)
        previous = part
    return path or "(body)"


def describe_validation_error(error: ValidationError, *, limit: int = 10) -> str:
    """'field: problem; ...' built from messages only (pydantic's inputs may hold personal data)."""
    problems = []
    for item in error.errors(include_url=False, include_input=False)[:limit]:
        message = str(item["msg"]).removeprefix("Value error, ")
        path = _field_path(tuple(item["loc"]))
        # Cross-field rules raised at model level already start with the field they concern.
        problems.append(message if not item["loc"] and ": " in message else f"{path}: {message}")
    more = error.error_count() - limit
    if more > 0:
        problems.append(f"and {more} more")
    return "; ".join(problems)


def load_json_object(body: bytes, *, where: str) -> dict[str, Any]:
    """UTF-8 JSON -> a dict, numbers as Decimal (money keeps every digit), or InvalidMessage
    saying what is wrong at `where` (the message's part, for the description)."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidMessage(f"{where}: not UTF-8 text") from None
    try:
        document = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidMessage(f"{where}: JSON nested too deeply") from None
    except ArithmeticError:  # decimal.InvalidOperation: an exponent beyond Decimal's range
        raise InvalidMessage(f"{where}: a number is out of range") from None
    except json.JSONDecodeError as exc:
        raise InvalidMessage(f"{where}: not valid JSON ({exc.msg})") from None
    except ValueError as exc:
        # int() refuses over 4,300 digits; NaN/Infinity come from _reject_constant
        reason = "a number has too many digits" if "digits" in str(exc) else str(exc)
        raise InvalidMessage(f"{where}: not valid JSON ({reason})") from None
    if not isinstance(document, dict):
        raise InvalidMessage(f"{where}: expected a JSON object, got {type(document).__name__}")
    return document


def check_major(value: str, *, supported: int, reader: str) -> str:
    """A `major.minor` version this app reads, or ValueError naming what it reads instead."""
    major = int(value.split(".", 1)[0])
    if major != supported:
        raise ValueError(
            f"major version {major} is not supported (this {reader} reads {supported}.x)"
        )
    return value


def parse_order(body: bytes, *, max_bytes: int = MAX_BODY_BYTES) -> InStoreOrder:
    """bytes -> InStoreOrder, or InvalidMessage naming what is wrong.

    JSON numbers are read as Decimal so money keeps every digit the ERP sent. `max_bytes` is
    ORDERS_MAX_MESSAGE_BYTES.
    """
    if len(body) > max_bytes:
        raise InvalidMessage(
            f"(body): {len(body)} bytes is over ORDERS_MAX_MESSAGE_BYTES ({max_bytes}); raise it "
            "if the namespace carries larger messages (Premium)"
        )
    document = load_json_object(body, where="(body)")
    try:
        return InStoreOrder.model_validate(document)
    except ValidationError as exc:
        raise InvalidMessage(describe_validation_error(exc)) from None
