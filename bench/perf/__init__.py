"""Speed and memory benchmarks (``bench perf``), one module per benchmark:

* ``encode``, ``decode``: the SAM backbone's encoding and decoding paths against their plainest alternative
  (``bench perf encode``, ``bench perf decode``), timed alike by ``comparison``;
* ``loss``: the tightness prior's memory and time, row/column sums against band masks (``bench perf loss``);
* ``roofline`` and ``train_step``: counted FLOPs and achieved GFLOP/s of the encoder and of every trained
  method's training step, against the machine's own matmul rate (``bench perf roofline``);
* ``suite``: ``bench perf`` itself, every section in one process (with ``bench run``'s grids for fit time and
  memory), and ``report``, its Markdown report.

Each module imports what it measures only; import the one you need (``from bench.perf.suite import run_suite``).
"""
