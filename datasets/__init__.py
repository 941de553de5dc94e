"""Dataset plugins (importable as ``bench.datasets``): one module per dataset release."""
