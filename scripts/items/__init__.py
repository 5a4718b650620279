"""The item store's writer (`apg items sync`): a catalogue encoded by the bundle's own encoder, published for
ranking requests that name candidates by id. The reader is service/items/store.py (which also documents the layout).

One concern per module:
  sync.py       the command: read the catalogue, encode it (features.Encoder, lenient), publish, summarise
  publish.py    the file snapshot and Redis writers: content-addressed versions, atomic switch, old versions retired
  catalogue.py  a named dataset's item catalogue (MovieLens: one row per item) as a CSV for `sync`
  bench.py      lookup p50/p99 of 1,000 ids among 100,000 items, file snapshot and Redis
"""
