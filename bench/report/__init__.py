"""Everything derived from run records: tables, the time report, plots, statistics, figures."""
