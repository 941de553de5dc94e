"""``results/perf.md``: the machine, the command, and one section per measurement of ``bench perf``."""

from __future__ import annotations

import pandas as pd

from bench.perf.suite import BUDGET, PAGE_MIB, REFERENCE_METHOD, SECTIONS, SuiteResult
from bench.perf.train_step import PASSES


def _table(rows: list[dict]) -> str:
    # every cell preformatted as text, so that tabulate keeps the chosen precision
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def _overrides(record: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(record["spec"]["overrides"].items())) or "–"


def _epochs(record: dict) -> int:
    return int(record["hparams"]["epochs"])


def render_report(result: SuiteResult) -> str:
    """``results/perf.md``: the machine, the command, and one section per measurement."""
    from bench.run.runner import git_revision

    settings = result.settings
    parts = [
        "# Performance",
        "",
        f"Measured {result.started:%Y-%m-%d %H:%M %Z} by `{settings.command}`"
        f" (git {(git_revision() or 'unknown')[:10]}), in {sum(result.section_seconds.values()):.0f} s.",
        "",
        *[f"* {name}: {value}" for name, value in result.machine.items()],
        "",
        f"Data: {settings.dataset}/{settings.task}, {settings.shots} training images (support draw 0, seed 0);"
        f" backbone {settings.backbone}; sections 2–5 run the {BUDGET} budget with epochs={settings.epochs} for every"
        " method that has epochs, section 6 both budgets. Every figure below was measured in this one process, side"
        " by side with the one it is compared with: absolute numbers move with the machine's load, ratios are what"
        " to read.",
    ]
    if settings.tiny:
        parts += ["", "**Tiny mode** (a random-weight test backbone, tiny inputs): the numbers exercise the suite and"
                  " mean nothing about the methods."]  # fmt: skip
    parts += _encode_section(result) + _grid_section(result) + _fit_section(result) + _loss_section(result)
    parts += _memory_section(result) + _roofline_section(result)
    parts += ["", "## Wall time per section", "",
              _table([{"section": f"{number}. {name}", "seconds": f"{result.section_seconds[name]:.1f}"}
                      for number, name in enumerate(SECTIONS, 1)])]  # fmt: skip
    return "\n".join(parts) + "\n"


def _encode_section(result: SuiteResult) -> list[str]:
    encode = result.encode
    height, width = result.encode_shape
    return [
        "", "## 1. Encoding throughput", "",
        f"{encode.images} random images of the dataset's size ({height}×{width}), batches of "
        f"{min(encode.batch_size, encode.images)}, on {encode.device}; the two paths alternate"
        f" {result.settings.encode_repeats}× and the median counts. The harness path digests, preprocesses,"
        " encodes and stores float16 embeddings into an empty (cold) on-disk cache each time; the bare path is the"
        " image encoder's forward alone on the same batches, already preprocessed and on the device.",
        "",
        _table([{"path": encode.harness, "images/s": f"{encode.harness_per_second:.3f}"},
                {"path": encode.reference, "images/s": f"{encode.reference_per_second:.3f}"}]),
        "",
        f"Harness ÷ bare: **{encode.ratio:.3f}**.",
    ]  # fmt: skip


def _grid_section(result: SuiteResult) -> list[str]:
    def totals(records: list[dict]) -> dict[str, int]:
        return {kind: sum(record["embeddings"][kind] for record in records) for kind in ("encoded", "cached")}

    cold, warm = totals(result.cold_records), totals(result.warm_records)
    runs = ", ".join(f"{record['spec']['method']} ({record['spec']['labels']}; {_overrides(record)})"
                     for record in result.cold_records)  # fmt: skip
    rows = [
        {"grid": "cold: empty embedding cache", "wall s": f"{result.cold_seconds:.1f}",
         "images encoded": str(cold["encoded"]), "embeddings read from cache": str(cold["cached"])},
        {"grid": "warm: the same runs, cache filled by the cold grid", "wall s": f"{result.warm_seconds:.1f}",
         "images encoded": str(warm["encoded"]), "embeddings read from cache": str(warm["cached"])},
    ]  # fmt: skip
    return [
        "", "## 2. Cold grid vs warm embedding cache", "",
        f"The runs {runs} executed as `bench run` does (inline executor), first against an empty embedding cache,"
        " then again into a fresh results folder with the cache the first pass filled. The backbone and the"
        " dataset were loaded before either clock started.",
        "",
        _table(rows),
        "",
        f"Cold ÷ warm: **{result.cold_seconds / result.warm_seconds:.2f}×** the wall time.",
    ]  # fmt: skip


def _fit_section(result: SuiteResult) -> list[str]:
    records = result.fit_records
    reference = next(record for record in records if record["spec"]["method"] == REFERENCE_METHOD)
    reference_per_epoch = reference["fit_seconds"] / _epochs(reference)
    rows = []
    for record in records:
        per_epoch = record["fit_seconds"] / _epochs(record)
        rows.append({
            "method": record["spec"]["method"], "labels": record["spec"]["labels"], "overrides": _overrides(record),
            "epochs": str(_epochs(record)), "fit s": f"{record['fit_seconds']:.2f}", "s/epoch": f"{per_epoch:.3f}",
            "fit ÷ prompt module": f"{record['fit_seconds'] / reference['fit_seconds']:.2f}",
            "s/epoch ÷ prompt module": f"{per_epoch / reference_per_epoch:.2f}",
            "peak memory MiB": _memory(record),
        })  # fmt: skip
    return [
        "", "## 3. Fit time per method", "",
        f"One run each, one after another, on the same {result.settings.shots} training images, with the embedding"
        " cache warm (section 2), so a SAM-based fit holds no encoding. Fit seconds and peak memory are the run"
        " records' own (`fit_seconds`, `peak_memory_mb`).",
        "",
        _table(rows),
    ]  # fmt: skip


def _loss_section(result: SuiteResult) -> list[str]:
    loss = result.loss
    rows = [{"variant": name, "peak MiB": f"{values['peak_mb']:.1f}", "ms per forward + backward":
             f"{values['seconds'] * 1e3:.2f}", "loss": f"{values['loss']:.6g}"}
            for name, values in loss.results.items()]  # fmt: skip
    fast_peak = next(iter(loss.results.values()))["peak_mb"]
    # below one page the resident set cannot tell the row/column sums' memory from nothing: no ratio
    memory = (f"**{loss.ratio('peak_mb'):.1f}×** the memory" if fast_peak > PAGE_MIB
              else "no memory ratio (the row/column sums added less than a page)")  # fmt: skip
    return [
        "", "## 4. Tightness-loss memory: row/column sums vs band masks", "",
        f"Forward + backward of the tightness prior on a batch of {loss.batch} random {loss.size}×{loss.size} maps on"
        f" {loss.device}, centred box {loss.box.width}×{loss.box.height} ({loss.bands} bands), each variant in a"
        f" fresh process (`bench perf loss`); median of {result.settings.loss_repeats} timed steps.",
        "",
        _table(rows),
        "",
        f"Band masks ÷ row/column sums: {memory}, **{loss.ratio('seconds'):.1f}×** the time.",
    ]  # fmt: skip


def _memory(record: dict) -> str:
    return "–" if record.get("peak_memory_mb") is None else f"{record['peak_memory_mb']:.0f}"


def _memory_section(result: SuiteResult) -> list[str]:
    passes = [("2 cold", result.cold_records), ("2 warm", result.warm_records), ("3", result.fit_records),
              ("5", result.extra_records)]  # fmt: skip
    rows = [
        {"method": record["spec"]["method"], "section": section, "labels": record["spec"]["labels"],
         "overrides": _overrides(record), "images encoded": str(record["embeddings"]["encoded"]),
         "peak memory MiB": _memory(record), "measure": record.get("peak_memory_kind") or "–"}
        for section, records in passes for record in records
    ]  # fmt: skip
    rows.sort(key=lambda row: row["method"])
    rows += [{"method": name, "section": "–", "labels": "–", "overrides": "–", "images encoded": "–",
              "peak memory MiB": f"not run: {reason}", "measure": "–"} for name, reason in result.skipped.items()]
    return [
        "", "## 5. Peak memory per run", "",
        "Every run of this suite, by method. Methods no other section runs had one cheap run here: the quick budget"
        " with the method's own `tiny` overrides (e.g. fewer optimisation steps; see the overrides column)."
        " `cpu-rss-increase`:"
        " the rise of the process's resident set over the run's fit and prediction; `cuda-allocator-increase`: the"
        " CUDA allocator's peak over what was allocated at the run's start. A run that encodes images (cold grid)"
        " also holds the encoder's activations.",
        "",
        _table(rows),
    ]  # fmt: skip


def _roofline_section(result: SuiteResult) -> list[str]:
    roofline, settings = result.roofline, result.settings
    shots, budgets = settings.roofline_shots or settings.shots, settings.roofline_budgets
    return [
        "", "## 6. Roofline: achieved GFLOP/s against the matmul rate", "",
        f"Matmul rate: **{roofline.matmul.gflops:.4g} GFLOP/s**, {roofline.matmul.describe()}.",
        "",
        "FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` (matrix products and convolutions, forward"
        " and backward; element-wise work is not counted), never in the run that is timed. The encoder: FLOPs of"
        f" the eager image encoder, seconds of `Backbone.encode` ({settings.backbone}, random images). A training"
        f" step: the method's own `fit` on {shots} support image{'s' * (shots != 1)}, at its {' and '.join(budgets)}"
        f" budget{'s' * (len(budgets) != 1)} with"
        f" {PASSES} passes over them (epochs; PerSAM-F: steps): the first takes the first-call costs, the second is"
        " counted, the third timed, so neither holds the fit's setup. GFLOP / image is per image-step (a step's"
        " FLOPs over its images); ÷ matmul rate is the achieved GFLOP/s over the matmul rate. Speed-up bound: the"
        " counted calls replayed one by one on random tensors of their own shapes give what the path's matrix"
        " products and convolutions cost alone; timed ÷ that is the most the path can speed up without computing"
        " something else, its element-wise work made free, and products alone ÷ matmul rate the fraction of the"
        " matmul rate it would then reach (`bench perf roofline` measures this section alone).",
        "",
        _table(roofline.rows()),
    ]  # fmt: skip
