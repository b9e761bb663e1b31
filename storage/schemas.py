"""The tables' Arrow schemas, derived from the models (normalize/models.py, normalize/order_models.py),
never inferred: each column in its model's field order. Apart from the models so that a run that
writes nothing (a rerun with nothing new) never imports pyarrow.
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

import pyarrow as pa
from pydantic import BaseModel

from normalize.models import SCHEMA_VERSION, Product, ProductDeletion
from normalize.order_models import Order, OrderLine

PRICE_TYPE = pa.decimal128(18, 4)


def _arrow_type(annotation) -> pa.DataType:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is Annotated:
        return _arrow_type(args[0])
    if origin in (typing.Union, types.UnionType):
        return _arrow_type(args[0])
    if origin is Literal or annotation is str:
        return pa.string()
    if origin is list:
        return pa.list_(_arrow_type(args[0]))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct([pa.field(n, _arrow_type(f.annotation)) for n, f in annotation.model_fields.items()])
    simple = {Decimal: PRICE_TYPE, datetime: pa.timestamp("us", tz="UTC"), int: pa.int64(),
              float: pa.float64(), bool: pa.bool_()}
    return simple[annotation]


def arrow_schema(model: type[BaseModel] = Product) -> pa.Schema:
    """The Parquet schema, in the model's field order."""
    fields = []
    for name, info in model.model_fields.items():
        annotation = info.rebuild_annotation() if hasattr(info, "rebuild_annotation") else info.annotation
        fields.append(pa.field(name, _arrow_type(annotation), nullable=not info.is_required()))
    return pa.schema(fields, metadata={"schema_version": str(SCHEMA_VERSION)})


SCHEMA = arrow_schema()
DELETIONS_SCHEMA = arrow_schema(ProductDeletion)
ORDERS_SCHEMA = arrow_schema(Order)
ORDER_LINES_SCHEMA = arrow_schema(OrderLine)
SCHEMAS = {"products": SCHEMA, "product_deletions": DELETIONS_SCHEMA, "orders": ORDERS_SCHEMA,
           "order_lines": ORDER_LINES_SCHEMA}  # every table's
