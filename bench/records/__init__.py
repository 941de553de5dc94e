"""The records layer: run specs and ids, the results store (the one reader and writer of records), descriptions,
names, rows, run status, claims."""
