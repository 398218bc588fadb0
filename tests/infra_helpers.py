"""Helpers for tests/test_infra.py.

- `Evaluator`: a small evaluator of ARM template expressions (the functions infra/main.json and
  the Bicep compiler's output use), so tests assert on concrete names, scopes and settings rather
  than on expression text. Resource copy loops become one `Resource` per element (`copyIndex()`),
  and lambdas (`filter`, `map`, `reduce`, `toObject`) are evaluated as ARM does; `fail(message)`
  raises `TemplateFailure` (the deployment stops with that message). Values known only at
  deployment (`reference()`, `listKeys()`) become `Runtime` strings. An unknown function is an
  error: a typo in main.json fails the tests.
- `BicepOutline`: the declarations of a .bicep file (params, vars, resources), read line by line.
- `read_bicepparam`: the `param x = literal` lines of a .bicepparam file (and one-level objects).
- `offline_commands`: the shell commands of the docs that CI runs (see test_infra.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"

SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000000"
TENANT_ID = "11111111-1111-1111-1111-111111111111"
RESOURCE_GROUP = "rg-ordersync-test"
RG_ID = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{RESOURCE_GROUP}"
ENVIRONMENT: dict[str, Any] = {
    "name": "AzureCloud",
    "suffixes": {"storage": "core.windows.net", "keyvaultDns": ".vault.azure.net"},
}


class ArmError(Exception):
    """The template uses something this evaluator (or ARM) does not accept."""


class TemplateFailure(Exception):
    """The template called `fail(message)`: ARM stops the deployment with this message."""


def _fail(message: str) -> Any:
    raise TemplateFailure(message)


def _equals(a: Any, b: Any) -> bool:
    """ARM compares values with their types: `equals(1, true())` is false (Python: True)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _items(value: Mapping[str, Any]) -> list[dict[str, Any]]:
    """items(object): [{key, value}] in the order of the keys (ARM sorts them)."""
    return [{"key": key, "value": value[key]} for key in sorted(value, key=str.lower)]


def _reduce(items: list[Any], initial: Any, each: Callable[..., Any]) -> Any:
    current = initial
    for item in items:
        current = each(current, item)
    return current


class Runtime(str):
    """A value ARM knows only while deploying, e.g. `reference(<id>).ConnectionString`."""

    __slots__ = ()


# ------------------------------------------------------------------------------------------
# Expression parsing
# ------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<punct>[(),.\[\]]))"
)


@dataclass(frozen=True)
class _Node:
    kind: str  # "lit" | "call" | "prop" | "index"
    value: Any = None
    args: tuple[_Node, ...] = ()


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match:
            raise ArmError(f"cannot parse expression at {text[pos:]!r} in {text!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.pos = 0

    def parse(self) -> _Node:
        node = self._expr()
        if self.pos != len(self.tokens):
            raise ArmError(f"unexpected {self.tokens[self.pos][1]!r} in {self.text!r}")
        return node

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self, value: str | None = None) -> tuple[str, str]:
        token = self._peek()
        if token is None or (value is not None and token[1] != value):
            raise ArmError(f"expected {value or 'a token'} in {self.text!r}")
        self.pos += 1
        return token

    def _expr(self) -> _Node:
        kind, value = self._take()
        if kind == "str":
            node = _Node("lit", value[1:-1].replace("''", "'"))
        elif kind == "num":
            node = _Node("lit", int(value))
        elif kind == "name":
            self._take("(")
            args: list[_Node] = []
            if self._peek() != ("punct", ")"):
                args.append(self._expr())
                while self._peek() == ("punct", ","):
                    self._take(",")
                    args.append(self._expr())
            self._take(")")
            node = _Node("call", value, tuple(args))
        else:
            raise ArmError(f"unexpected {value!r} in {self.text!r}")
        while self._peek() in (("punct", "."), ("punct", "[")):
            if self._take()[1] == ".":
                node = _Node("prop", self._take()[1], (node,))
            else:
                node = _Node("index", None, (node, self._expr()))
                self._take("]")
        return node


def is_expression(value: object) -> bool:
    return isinstance(value, str) and value.startswith("[") and not value.startswith("[[")


def parse(text: str) -> _Node:
    """Parse one ARM expression (the text between the outer brackets)."""
    return _Parser(text).parse()


def calls(node: _Node) -> Iterator[str]:
    """Every function name called in `node`."""
    if node.kind == "call":
        yield node.value
    for arg in node.args:
        yield from calls(arg)


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


# ------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------


def _unique_string(*parts: str) -> str:
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "".join(alphabet[b % 32] for b in digest[:13])


def _to_string(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, Mapping | list):
        return json.dumps(value)
    return str(value)


def _format(template: str, *args: Any) -> str:
    """.NET composite formatting, as ARM's format(): {0}, {1}, ...; {{ and }} are literal braces."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) in ("{{", "}}"):
            return match.group(0)[0]
        if match.group(1) is None:
            raise ArmError(f"format({template!r}): a lone brace must be doubled")
        return _to_string(args[int(match.group(1))])

    return re.sub(r"\{\{|\}\}|\{(\d+)\}|[{}]", repl, template)


def _union(*items: Any) -> Any:
    if all(isinstance(i, Mapping) for i in items):
        merged: dict[str, Any] = {}
        for item in items:
            merged.update(item)
        return merged
    if all(isinstance(i, list) for i in items):
        out: list[Any] = []
        for item in items:
            out += [x for x in item if x not in out]
        return out
    raise ArmError(f"union of mixed types: {items!r}")


def _resource_id(scope: str, type_: str, *names: str) -> str:
    namespace, *types = type_.split("/")
    if len(types) != len(names):
        raise ArmError(f"resourceId({type_!r}, {names!r}): one name per type segment")
    path = "/".join(f"{t}/{n}" for t, n in zip(types, names, strict=True))
    return f"{scope}/providers/{namespace}/{path}"


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | Mapping) and len(value) == 0)


class Evaluator:
    """Evaluate a template for given parameter values (defaults fill the rest)."""

    def __init__(self, template: Mapping[str, Any], parameters: Mapping[str, Any]) -> None:
        self.template = template
        self._given = dict(parameters)
        unknown = set(self._given) - set(template.get("parameters", {}))
        if unknown:
            raise ArmError(f"unknown parameters {sorted(unknown)}")
        self._params: dict[str, Any] = {}
        self._vars: dict[str, Any] = {}
        #: the copy loop(s) being evaluated: loop name -> index (innermost last)
        self._copy: dict[str, int] = {}
        #: lambda parameters in scope, innermost last
        self._lambda_scopes: list[dict[str, Any]] = []
        self._resources: list[Resource] | None = None
        self._functions: dict[str, Callable[..., Any]] = {
            "parameters": self._parameter,
            "variables": self._variable,
            "concat": lambda *a: (
                [x for part in a for x in part]
                if a and isinstance(a[0], list)
                else "".join(_to_string(x) for x in a)
            ),
            "format": _format,
            "string": _to_string,
            "int": int,
            "bool": lambda v: v if isinstance(v, bool) else str(v).lower() == "true",
            "tolower": lambda s: s.lower(),
            "toupper": lambda s: s.upper(),
            "trim": lambda s: s.strip(),
            "take": lambda v, n: v[: max(int(n), 0)],
            "skip": lambda v, n: v[max(int(n), 0) :],
            "replace": lambda s, old, new: s.replace(old, new),
            "split": lambda s, sep: s.split(sep),
            "join": lambda items, sep: sep.join(_to_string(x) for x in items),
            "first": lambda v: v[0],
            "last": lambda v: v[-1],
            "length": len,
            "contains": lambda c, item: item in c,
            "startswith": lambda s, p: s.lower().startswith(p.lower()),
            "endswith": lambda s, p: s.lower().endswith(p.lower()),
            "uniquestring": lambda *a: _unique_string(*map(str, a)),
            "guid": lambda *a: str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join(map(str, a)))),
            "equals": _equals,
            "not": lambda a: not a,
            "empty": _empty,
            "coalesce": lambda *a: next((x for x in a if x is not None), None),
            "union": _union,
            "createobject": lambda *a: {a[i]: a[i + 1] for i in range(0, len(a), 2)},
            "createarray": lambda *a: list(a),
            "items": _items,
            "flatten": lambda arrays: [x for array in arrays for x in array],
            "fail": _fail,
            "true": lambda: True,
            "false": lambda: False,
            "null": lambda: None,
            "resourcegroup": lambda: {
                "id": RG_ID,
                "name": RESOURCE_GROUP,
                "location": "westeurope",
                "type": "Microsoft.Resources/resourceGroups",
            },
            "subscription": lambda: {
                "id": f"/subscriptions/{SUBSCRIPTION_ID}",
                "subscriptionId": SUBSCRIPTION_ID,
                "tenantId": TENANT_ID,
            },
            "tenant": lambda: {"tenantId": TENANT_ID},
            "environment": lambda: ENVIRONMENT,
            "resourceid": lambda t, *n: _resource_id(RG_ID, t, *n),
            "subscriptionresourceid": lambda t, *n: _resource_id(
                f"/subscriptions/{SUBSCRIPTION_ID}", t, *n
            ),
            "extensionresourceid": lambda scope, t, *n: _resource_id(scope, t, *n),
            "reference": lambda target, *_: Runtime(f"reference({target})"),
            "listkeys": lambda target, *_: Runtime(f"listKeys({target})"),
            "copyindex": self._copy_index,
            "lambdavariables": self._lambda_variable,
            "filter": lambda items, keep: [x for x in items if keep(x)],
            "map": lambda items, each: [each(x) for x in items],
            "reduce": _reduce,
            "toobject": lambda items, key, value=None: {
                str(key(x)): (value(x) if value is not None else x) for x in items
            },
        }

    # -- public --------------------------------------------------------------------------

    def value(self, node: Any, copy: Mapping[str, int] | None = None) -> Any:
        """Evaluate a template value: expressions in strings, recursively in objects/arrays.
        `copy`: the copy loop element it belongs to (loop name -> index), for `copyIndex()`."""
        if copy is not None:
            saved, self._copy = self._copy, dict(copy)
            try:
                return self.value(node)
            finally:
                self._copy = saved
        if isinstance(node, str):
            if is_expression(node):
                if not node.endswith("]"):
                    raise ArmError(f"unterminated expression {node!r}")
                return self._eval(parse(node[1:-1]))
            return node[1:] if node.startswith("[[") else node
        if isinstance(node, Mapping):
            return {key: self.value(item) for key, item in node.items()}
        if isinstance(node, list):
            return [self.value(item) for item in node]
        return node

    def resources(self) -> list[Resource]:
        """Every resource of the template; a copy loop gives one per element."""
        if self._resources is not None:
            return list(self._resources)
        found = []
        for raw in self.template["resources"]:
            loop = raw.get("copy")
            if loop is None:
                found.append(self._resource(raw, {}))
                continue
            count = int(self.value(loop["count"]))
            if count < 0 or count > 800:  # ARM's limits on a copy loop
                raise ArmError(f"copy {loop['name']!r}: count {count} outside 0..800")
            found += [self._resource(raw, {loop["name"]: index}) for index in range(count)]
        self._resources = found
        return list(found)

    def copy_loops(self) -> dict[str, list[Resource]]:
        """Copy loop name -> its resources (a dependsOn entry may name the whole loop)."""
        loops: dict[str, list[Resource]] = {}
        for resource in self.resources():
            for name in resource.copy:
                loops.setdefault(name, []).append(resource)
        return loops

    def _resource(self, raw: Mapping[str, Any], copy: Mapping[str, int]) -> Resource:
        deployed = bool(self.value(raw.get("condition", True), copy=copy))
        scope = self.value(raw["scope"], copy=copy) if "scope" in raw else None
        return Resource(
            type=raw["type"],
            api_version=raw["apiVersion"],
            name=self.value(raw["name"], copy=copy),
            deployed=deployed,
            scope=_full_scope(scope) if scope else RG_ID,
            raw=raw,
            evaluator=self,
            copy=dict(copy),
        )

    def deployed(self, type_: str) -> list[Resource]:
        return [r for r in self.resources() if r.deployed and r.type.lower() == type_.lower()]

    def one(self, type_: str, name_suffix: str = "") -> Resource:
        matches = [r for r in self.deployed(type_) if r.name.endswith(name_suffix)]
        if len(matches) != 1:
            raise AssertionError(f"{len(matches)} deployed {type_} named *{name_suffix}")
        return matches[0]

    # -- internals -----------------------------------------------------------------------

    def _parameter(self, name: str) -> Any:
        if name not in self._params:
            declared = self.template["parameters"].get(name)
            if declared is None:
                raise ArmError(f"parameters({name!r}) is not declared")
            if name in self._given:
                self._params[name] = self._given[name]
            elif "defaultValue" in declared:
                self._params[name] = self.value(declared["defaultValue"])
            else:
                raise ArmError(f"parameter {name!r} has no value and no default")
        return self._params[name]

    def _variable(self, name: str) -> Any:
        if name not in self._vars:
            declared = self.template.get("variables", {})
            if name not in declared:
                raise ArmError(f"variables({name!r}) is not declared")
            self._vars[name] = self.value(declared[name])
        return self._vars[name]

    def _copy_index(self, *args: Any) -> int:
        """copyIndex(), copyIndex(offset), copyIndex('loop'), copyIndex('loop', offset)."""
        if not self._copy:
            raise ArmError("copyIndex() outside a copy loop")
        loop, offset = next(reversed(self._copy)), 0
        if args and isinstance(args[0], str):
            loop, args = args[0], args[1:]
        if args:
            offset = int(args[0])
        if loop not in self._copy:
            raise ArmError(f"copyIndex({loop!r}): not inside that loop")
        return self._copy[loop] + offset

    def _lambda_variable(self, name: str) -> Any:
        for scope in reversed(self._lambda_scopes):
            if name in scope:
                return scope[name]
        raise ArmError(f"lambdaVariables({name!r}) outside its lambda")

    def _lambda(self, node: _Node) -> Callable[..., Any]:
        """lambda('a', ['b',] body): evaluated when called, with its parameters in scope."""
        *names, body = node.args
        if not names or any(n.kind != "lit" or not isinstance(n.value, str) for n in names):
            raise ArmError("lambda(): parameter names must be string literals")

        def call(*values: Any) -> Any:
            if len(values) != len(names):
                raise ArmError(f"lambda of {len(names)} parameter(s) called with {len(values)}")
            self._lambda_scopes.append({n.value: v for n, v in zip(names, values, strict=True)})
            try:
                return self._eval(body)
            finally:
                self._lambda_scopes.pop()

        return call

    def _eval(self, node: _Node) -> Any:
        if node.kind == "lit":
            return node.value
        if node.kind == "prop":
            return _member(self._eval(node.args[0]), node.value)
        if node.kind == "index":
            return _member(self._eval(node.args[0]), self._eval(node.args[1]))
        name = node.value.lower()
        if name == "if":  # lazy, as in ARM
            condition, then, other = node.args
            return self._eval(then) if self._eval(condition) else self._eval(other)
        if name == "lambda":
            raise ArmError(f"lambda() only as an argument of {', '.join(sorted(_LAMBDA_TAKERS))}")
        if name in ("and", "or"):
            values = (bool(self._eval(arg)) for arg in node.args)
            return all(values) if name == "and" else any(values)
        function = self._functions.get(name)
        if function is None:
            raise ArmError(f"unknown template function {node.value!r}")
        return function(*(self._argument(name, arg) for arg in node.args))

    def _argument(self, function: str, node: _Node) -> Any:
        if node.kind == "call" and node.value.lower() == "lambda" and function in _LAMBDA_TAKERS:
            return self._lambda(node)
        return self._eval(node)


#: the functions ARM lets take a lambda (template-functions-lambda, "Limitations")
_LAMBDA_TAKERS = frozenset({"filter", "groupby", "map", "mapvalues", "reduce", "sort", "toobject"})


def _member(base: Any, key: Any) -> Any:
    if isinstance(base, Runtime):
        return Runtime(f"{base}.{key}" if isinstance(key, str) else f"{base}[{key}]")
    if isinstance(base, Mapping):
        if key in base:
            return base[key]
        folded = {str(k).lower(): v for k, v in base.items()}
        if str(key).lower() in folded:  # ARM property names are case-insensitive
            return folded[str(key).lower()]
        raise ArmError(f"no property {key!r} in {sorted(base)}")
    if isinstance(base, list) and isinstance(key, int):
        return base[key]
    raise ArmError(f"cannot read {key!r} of {base!r}")


def _full_scope(scope: str) -> str:
    return scope if scope.startswith("/") else f"{RG_ID}/providers/{scope}"


@dataclass
class Resource:
    type: str
    api_version: str
    name: str
    deployed: bool
    scope: str
    raw: Mapping[str, Any]
    evaluator: Evaluator = field(repr=False)
    #: the copy loop element this is (loop name -> index); empty outside a loop
    copy: dict[str, int] = field(default_factory=dict)

    @property
    def id(self) -> str:
        if self.type.lower() == "microsoft.authorization/roleassignments":
            return f"{self.scope}/providers/{self.type}/{self.name}"
        return _resource_id(RG_ID, self.type, *self.name.split("/"))

    def value(self, node: Any) -> Any:
        """Evaluate part of this resource's declaration (in its copy loop element)."""
        return self.evaluator.value(node, copy=self.copy)

    def get(self, key: str) -> Any:
        return self.value(self.raw.get(key))

    @property
    def properties(self) -> Any:
        return self.get("properties")

    def depends_on(self) -> list[str]:
        """Resource ids; an entry naming a copy loop stands for every resource of the loop."""
        loops = self.evaluator.copy_loops()
        found: list[str] = []
        for entry in self.raw.get("dependsOn", []):
            if isinstance(entry, str) and not is_expression(entry) and entry in loops:
                found += [r.id for r in loops[entry]]
            else:
                found.append(self.value(entry))
        return found


# ------------------------------------------------------------------------------------------
# Bicep and .bicepparam
# ------------------------------------------------------------------------------------------


@dataclass
class BicepOutline:
    params: dict[str, tuple[str, str | None]]  # name -> (type, default text or None)
    variables: dict[str, list[str]]  # name -> its lines (for object literals)
    resources: dict[str, str]  # symbol -> "Type@apiVersion"
    outputs: list[str]

    @classmethod
    def read(cls, path: Path) -> BicepOutline:
        lines = path.read_text().splitlines()
        params: dict[str, tuple[str, str | None]] = {}
        variables: dict[str, list[str]] = {}
        resources: dict[str, str] = {}
        outputs: list[str] = []
        for index, line in enumerate(lines):
            if match := re.match(r"param (\w+) (\w+)(?: = (.+))?$", line):
                params[match[1]] = (match[2], match[3])
            elif match := re.match(r"var (\w+) = (.*)$", line):
                body = [match[2]]
                if match[2] == "{":
                    for inner in lines[index + 1 :]:
                        if inner == "}":
                            break
                        body.append(inner)
                variables[match[1]] = body
            elif match := re.match(r"resource (\w+) '([^']+)'", line):
                resources[match[1]] = match[2]
            elif match := re.match(r"output (\w+) ", line):
                outputs.append(match[1])
        return cls(params, variables, resources, outputs)

    def object_keys(self, variable: str) -> list[str]:
        """Top-level keys of a `var x = { ... }` object literal."""
        return [
            m[1] for line in self.variables[variable][1:] if (m := re.match(r"  (['\w.-]+):", line))
        ]

    def object_values(self, variable: str) -> dict[str, str]:
        return {
            m[1]: m[2]
            for line in self.variables[variable][1:]
            if (m := re.match(r"  (['\w.-]+): (.+)$", line))
        }


def _literal(text: str) -> Any:
    text = text.strip()
    if text.startswith("'") and text.endswith("'"):
        return text[1:-1].replace("\\'", "'")
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if text in ("{}", "[]"):
        return {} if text == "{}" else []
    raise ValueError(f"not a simple literal: {text}")


def read_bicepparam(path: Path) -> tuple[str, dict[str, Any]]:
    """(the `using` target, {param: value}) of a .bicepparam with one-line literal values, or an
    object of one-line literals written one property a line (`param x = {` ... `}`)."""
    using = ""
    values: dict[str, Any] = {}
    lines = iter(path.read_text().splitlines())
    for line in lines:
        if match := re.match(r"using '([^']+)'", line):
            using = match[1]
        elif match := re.match(r"param (\w+) = \{$", line):
            values[match[1]] = _object_literal(lines)
        elif match := re.match(r"param (\w+) = (.+)$", line):
            values[match[1]] = _literal(match[2])
    return using, values


def _object_literal(lines: Iterator[str]) -> dict[str, Any]:
    """The properties up to the closing `}`: `  NAME: literal` or `  'name.x': literal`, comments
    on lines of their own."""
    found: dict[str, Any] = {}
    for line in lines:
        text = line.strip()  # a comment takes its own line
        if text == "}":
            return found
        if not text or text.startswith("//"):
            continue
        match = re.fullmatch(r"(\w+|'[^']+'):\s*(.+)", text)
        if not match:
            raise ValueError(f"not a one-line object property: {line}")
        found[match[1].strip("'")] = _literal(match[2])
    raise ValueError("object literal without its closing }")


# ------------------------------------------------------------------------------------------
# Documentation commands
# ------------------------------------------------------------------------------------------

OFFLINE_MARKER = "# offline"


def offline_commands(markdown: str) -> list[str]:
    """Commands of the ```bash blocks whose first line is `# offline`: one command per line,
    comments and blank lines skipped."""
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.S):
        lines = block.splitlines()
        if not lines or lines[0].strip() != OFFLINE_MARKER:
            continue
        commands += [
            line.strip() for line in lines[1:] if line.strip() and not line.strip().startswith("#")
        ]
    return commands


def bash_blocks(markdown: str) -> Sequence[str]:
    return list(re.findall(r"```bash\n(.*?)```", markdown, re.S))
