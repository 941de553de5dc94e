"""Method plugins (importable as ``bench.methods``): one module per method."""
