"""A small GraphQL executor for the sandbox's read queries over plain dicts.

graphql-core's general executor resolves each field through several layers of Python (about
15 us a field), which made the sandbox, not the client under test, the slowest process in a
benchmark on two cores. Documents reaching this module have already passed graphql-core's
validation against Shopify's schema; what is left is projection: each selected field read from
its dict (or called, when the value is a resolver), arguments coerced by graphql-core's own
helpers, fragments applied by runtime type, aliases honoured. Anything it does not handle
raises Unsupported, and the caller runs graphql-core's executor instead. A test checks both
executors give the same answer for every query the clients send.
"""

from __future__ import annotations

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    get_named_type,
    get_nullable_type,
    is_abstract_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
)
from graphql.execution.values import get_argument_values, get_variable_values


class Unsupported(Exception):
    """Use graphql-core's executor for this document."""


def execute_query(schema: GraphQLSchema, operation: OperationDefinitionNode, fragments: dict, root: dict,
                  variables: dict, root_fields: frozenset[str]) -> dict:
    """The `data` of a query whose root fields are all in `root_fields` (read-only resolvers)."""
    if operation.operation.value != "query" or operation.directives:
        raise Unsupported("not a plain query")
    coerced = get_variable_values(schema, operation.variable_definitions or (), variables)
    if isinstance(coerced, list):  # variable errors: graphql-core words them
        raise Unsupported("variable errors")
    run = _Run(schema, fragments, coerced)
    for field in run.fields(operation.selection_set, schema.query_type.name):
        if field.name.value not in root_fields:
            raise Unsupported(f"root field {field.name.value}")
    return run.object(root, operation.selection_set, schema.query_type)


class _Run:
    def __init__(self, schema, fragments, variables):
        self.schema, self.fragments, self.variables = schema, fragments, variables

    def fields(self, selection_set, type_name: str):
        """The field nodes selected on an object of runtime type `type_name`, fragments applied."""
        for selection in selection_set.selections:
            if selection.directives:
                raise Unsupported("directives")
            if isinstance(selection, FieldNode):
                yield selection
            elif isinstance(selection, InlineFragmentNode):
                if self._applies(selection.type_condition, type_name):
                    yield from self.fields(selection.selection_set, type_name)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments[selection.name.value]
                if self._applies(fragment.type_condition, type_name):
                    yield from self.fields(fragment.selection_set, type_name)

    def _applies(self, condition, type_name: str) -> bool:
        if condition is None or condition.name.value == type_name:
            return True
        wanted = self.schema.get_type(condition.name.value)
        return is_abstract_type(wanted) and self.schema.is_sub_type(wanted, self.schema.get_type(type_name))

    def object(self, source: dict, selection_set, object_type) -> dict:
        out = {}
        for node in self.fields(selection_set, object_type.name):
            key = node.alias.value if node.alias else node.name.value
            name = node.name.value
            if name == "__typename":
                out[key] = object_type.name
                continue
            definition = object_type.fields[name]
            if key in out and not is_leaf_type(get_named_type(definition.type)):
                raise Unsupported("one object selected twice: graphql-core merges the selections")
            value = source.get(name)
            if callable(value):
                value = value(None, **get_argument_values(definition, node, self.variables))
            out[key] = self.complete(value, node, definition.type)
        return out

    def complete(self, value, node: FieldNode, field_type):
        if value is None:
            if is_non_null_type(field_type):
                raise Unsupported("null in a non-null field: graphql-core reports it and nulls the parent")
            return None
        field_type = get_nullable_type(field_type)
        if is_list_type(field_type):
            return [self.complete(item, node, field_type.of_type) for item in value]
        named = get_named_type(field_type)
        if is_leaf_type(named):
            return value
        if is_abstract_type(named):
            named = self.schema.get_type(value.get("__typename") or "")
            if named is None:
                raise Unsupported("abstract value without __typename")
        return self.object(value, node.selection_set, named)
