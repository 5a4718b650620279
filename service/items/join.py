"""The item store's rule for one request, the same for POST /score and KServe v2 (HTTP and gRPC).

A candidate (a row) that carries every item feature of the store is scored from its own features, as without a store:
it is not looked up. Any other row is looked up by its id, and the store's encoded rows give its item features,
except those the request carries for it (a candidate's key, even null; a v2 tensor), which override them row by row.
A miss (an id the store does not hold) has every item feature it does not carry missing (index 0), the id's own
fields (item_id and those derived from it) included. The encoder's required-feature rule holds, except that an item
feature the store supplies is not required of the request; the id is (it is the key).

    plan = ranking_plan(item, context, candidates)    # /score {"context", "candidates": ["242", {"item_id": ...}]}
    plan = columns_plan(item, columns)                # KServe v2: {feature: column}
    feeds = plan.encode(encoder)                      # the request's own features: its 400s come before any lookup
    if plan.ids is not None:                          # rows to look up (None: none)
        columns, found = store.lookup(plan.ids)
        plan.merge(feeds, fields, columns)            # the store's rows, where the request did not override them

`item` is `ItemSide(id_column, sources)`: the store's id column and item features (its manifest's).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from features import MISSING, Encoder, Field
from features.errors import MissingFeature
from service.items.store import ItemField


@dataclass(frozen=True)
class ItemSide:
    """What a store holds per item: the raw feature requests name items by, and the item features (the id's too)."""

    id_column: str
    sources: tuple[str, ...]

    @functools.cached_property
    def features(self) -> tuple[str, ...]:
        """The item features a row may carry itself, the id aside."""
        return tuple(s for s in self.sources if s != self.id_column)


@dataclass
class Plan:
    """One request, read against the store: its rows as the encoder takes them, and which rows are looked up."""

    context: Any  # /score: the context object; None for columns
    rows: Any  # /score: the candidates as objects (an id alone → {id_column: id}); v2: the columns
    ids: list | None = None  # ids of the rows looked up, in order; None: no row is
    where: np.ndarray | None = None  # indices of the rows looked up; None: every row (when ids is not None)
    carried: Mapping[str, bool | np.ndarray] | None = None  # per item feature: True, or which looked-up rows carry it
    id_column: str = ""
    ids_only: bool = False  # every candidate a (non-empty) string id: nothing per row for the encoder but the id

    def encode(self, encoder: Encoder) -> dict[str, np.ndarray]:
        if self.context is None:
            return encoder.encode_columns(self.rows)
        if self.ids_only:  # the context (and the first id) encoded once, every field repeated: the store's columns
            one = encoder.encode_ranking(self.context, [{self.id_column: self.ids[0]}])  # replace the item fields
            return {name: np.repeat(column, len(self.ids), axis=0) for name, column in one.items()}
        return encoder.encode_ranking(self.context, self.rows)

    def merge(self, feeds: dict[str, np.ndarray], fields: Iterable[ItemField], columns: dict[str, np.ndarray]) -> None:
        """Write the store's `columns` (of the looked-up rows) into `feeds`, field by field, where not overridden."""
        for f in fields:
            got = columns.get(f.name)
            if got is None or f.name not in feeds:
                continue
            carried = False if f.source == self.id_column else self.carried.get(f.source, False)
            if carried is True:
                continue  # the request's own value on every looked-up row
            if carried is False and self.where is None:
                feeds[f.name] = got  # (n,) or (n, max_len): the whole column
                continue
            take = slice(None) if carried is False else ~carried
            rows = self.where if self.where is not None else np.arange(len(got))
            feeds[f.name][rows[take]] = got[take]

    def check_required(self, feeds: dict[str, np.ndarray], fields: Iterable[Field]) -> None:
        """MissingFeature for a required item field missing where the request gave its value itself (a row not
        looked up, or one carrying it): where the store gave it, a miss may leave it missing."""
        for f in fields:
            column = feeds[f.name]
            empty = ~column.any(axis=1) if column.ndim == 2 else column == MISSING
            own = np.ones(len(column), dtype=bool)
            if self.ids is not None:
                looked = own.copy() if self.where is None else np.isin(np.arange(len(column)), self.where)
                own[looked] = self.carried.get(f.source, False)  # (True, False, or which looked-up rows carry it)
            if (empty & own).any():
                row = int(np.flatnonzero(empty & own)[0])
                raise MissingFeature(f"missing required feature {f.source!r}, row {row}", field=f.source, row=row)


def ranking_plan(item: ItemSide, context: Any, candidates: Any) -> Plan:
    """/score's ranking shape: every candidate an object (an id alone wrapped as {id_column: id}); the rows that lack
    one of the item features (neither they nor the context carry it) are looked up."""
    if not isinstance(candidates, list) or not candidates:
        return Plan(context, candidates)  # the encoder names what is wrong
    idc = item.id_column
    shared = frozenset(s for s in item.features if isinstance(context, dict) and s in context)
    if set(map(type, candidates)) == {str} and "" not in candidates:  # ids alone: all looked up, nothing overrides
        return Plan(context, None, candidates, None, dict.fromkeys(shared, True), idc, ids_only=True)
    rows = [c if type(c) is dict else {idc: c} for c in candidates]
    own = {s: np.fromiter((s in r for r in rows), bool, len(rows)) for s in item.features if s not in shared}
    need = np.flatnonzero(~np.logical_and.reduce(list(own.values()))) if own else np.empty(0, np.int64)
    if not len(need):
        return Plan(context, rows)  # every row carries every item feature
    where = None if len(need) == len(rows) else need
    carried = {s: True for s in shared} | {s: mask if where is None else mask[where] for s, mask in own.items()}
    ids = [rows[i].get(idc) for i in need.tolist()]
    return Plan(context, rows, ids, where, carried, idc)


def columns_plan(item: ItemSide, columns: Any) -> Plan:
    """KServe v2's columns: with the id tensor there and an item feature's tensor not, every row is looked up; the
    item tensors that are there override the store's."""
    if not isinstance(columns, dict) or item.id_column not in columns:
        return Plan(None, columns)
    given = {s: True for s in item.features if s in columns}
    if len(given) == len(item.features):
        return Plan(None, columns)
    ids = columns[item.id_column]
    ids = ids.tolist() if isinstance(ids, np.ndarray) else list(ids) if isinstance(ids, list | tuple) else ids
    return Plan(None, columns, ids, None, given, item.id_column)


def relaxed_fields(encoder: Encoder, item: ItemSide) -> tuple[Field, ...]:
    """The required fields of the item features the store supplies: a request need not carry them."""
    return tuple(f for f in encoder.schema.fields if f.required and f.source in item.features)


def relaxed(encoder: Encoder, item: ItemSide) -> Encoder:
    """The encoder, with the item features the store supplies no longer required of a request (the id still is).
    The encoder itself when none of them is required (the usual case: only the id is)."""
    schema = encoder.schema
    if not relaxed_fields(encoder, item):
        return encoder
    fields = [replace(f, required=False) if f.source in item.features else f for f in schema.fields]
    return Encoder(schema.with_fields(fields))
