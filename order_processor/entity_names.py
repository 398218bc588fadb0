"""The Service Bus entity names the settings give (topics, subscriptions), checked at start-up.

A name the namespace would refuse otherwise surfaces only when a trigger binding or a sender first
opens the entity, as an unhelpful runtime error. The rules are Azure's documented ones,
https://learn.microsoft.com/en-us/azure/azure-resource-manager/management/resource-name-rules#microsoftservicebus
(namespaces / topics: 1-260 characters, subscriptions: 1-50; see each pattern below).
"""

from __future__ import annotations

import re

#: namespaces / topics: alphanumerics, periods, hyphens, underscores and slashes; start and end
#: with alphanumeric; 1-260 characters
TOPIC_RULE = (
    "1-260 letters, numbers, periods, hyphens, underscores or forward slashes, "
    "starting and ending with a letter or number (Azure Service Bus naming rules)"
)
_TOPIC = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._/-]{0,258}[A-Za-z0-9])?")

#: namespaces / topics / subscriptions: alphanumerics, periods, hyphens and underscores; start
#: and end with alphanumeric; 1-50 characters
SUBSCRIPTION_RULE = (
    "1-50 letters, numbers, periods, hyphens or underscores, "
    "starting and ending with a letter or number (Azure Service Bus naming rules)"
)
_SUBSCRIPTION = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,48}[A-Za-z0-9])?")


def check_topic_name(value: str) -> str:
    """`value` when it is a valid topic name; ValueError stating the rule otherwise."""
    if not _TOPIC.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid topic name: {TOPIC_RULE}")
    return value


def check_subscription_name(value: str) -> str:
    """`value` when it is a valid subscription name; ValueError stating the rule otherwise."""
    if not _SUBSCRIPTION.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid subscription name: {SUBSCRIPTION_RULE}")
    return value
