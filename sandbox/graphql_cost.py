"""Query cost the way Shopify describes it, for the sandbox.

A scalar or enum costs 0, an object 1, and a connection 2 plus `first` (or `last`) times the cost
of one of its nodes. Shopify does not publish its exact connection formula; this one follows the
documented shape closely enough that a client pacing on the reported costs behaves the same.
"""

from __future__ import annotations

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLSchema,
    InlineFragmentNode,
    get_named_type,
    is_leaf_type,
)
from graphql import IntValueNode, VariableNode

ITEM_FIELDS = ("nodes", "edges")


def requested_cost(schema: GraphQLSchema, operation, fragments: dict, variables: dict) -> int:
    """The requested (up-front) cost of one operation."""
    root = schema.query_type if operation.operation.value == "query" else schema.mutation_type
    base = 10 if operation.operation.value == "mutation" else 0
    return base + _selection_cost(schema, root, operation.selection_set, fragments, variables)


def _selection_cost(schema, parent_type, selection_set, fragments, variables) -> int:
    if selection_set is None:
        return 0
    total = 0
    for selection in selection_set.selections:
        if isinstance(selection, InlineFragmentNode):
            inner = (schema.get_type(selection.type_condition.name.value)
                     if selection.type_condition else parent_type)
            total += _selection_cost(schema, inner, selection.selection_set, fragments, variables)
        elif isinstance(selection, FragmentSpreadNode):
            fragment = fragments[selection.name.value]
            inner = schema.get_type(fragment.type_condition.name.value)
            total += _selection_cost(schema, inner, fragment.selection_set, fragments, variables)
        elif isinstance(selection, FieldNode):
            total += _field_cost(schema, parent_type, selection, fragments, variables)
    return total


def _field_cost(schema, parent_type, node: FieldNode, fragments, variables) -> int:
    name = node.name.value
    if name.startswith("__") or not hasattr(parent_type, "fields"):
        return 0
    field = parent_type.fields[name]
    field_type = get_named_type(field.type)
    if is_leaf_type(field_type):
        return 0
    if field_type.name.endswith("Connection"):
        count = _page_argument(node, variables)
        per_item, rest = 0, 0
        for child in node.selection_set.selections:
            if isinstance(child, FieldNode) and child.name.value in ITEM_FIELDS:
                per_item += _field_cost(schema, field_type, child, fragments, variables)
            else:
                rest += _selection_cost(schema, field_type, _single(child), fragments, variables)
        return 2 + count * per_item + rest
    return 1 + _selection_cost(schema, field_type, node.selection_set, fragments, variables)


def _page_argument(node: FieldNode, variables: dict) -> int:
    for argument in node.arguments or ():
        if argument.name.value in ("first", "last"):
            value = argument.value
            if isinstance(value, VariableNode):
                return int(variables.get(value.name.value) or 0)
            if isinstance(value, IntValueNode):
                return int(value.value)
    return 0


class _single:
    """A one-selection selection set."""

    def __init__(self, selection):
        self.selections = [selection]


def actual_cost(data) -> int:
    """The cost of what was returned: one point per object in the answer."""
    if isinstance(data, dict):
        return 1 + sum(actual_cost(v) for v in data.values())
    if isinstance(data, list):
        return sum(actual_cost(v) for v in data)
    return 0
