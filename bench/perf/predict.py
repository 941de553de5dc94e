"""`bench perf predict`: the `bench predict` path against a bare encoder + decoder forward on the same images."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import torch

from bench.method import RunContext
from bench.paths import environment_variable
from bench.perf.comparison import Comparison, median_rates, random_images
from bench.records.spec import RunSpec
from bench.registry import DATASETS, METHODS
from bench.sam.backbones import Backbone

# HC18's own image size: the images are framed by its preprocessing (centre crop to 640×640)
HC18_SHAPE = (540, 800)


def predict_benchmark(
    backbone: Backbone, checkpoint: Path | None = None, images: int = 8, shape: tuple[int, int] = HC18_SHAPE,
    repeats: int = 3, seed: int = 0,
) -> Comparison:  # fmt: skip
    """The prompt module (HC18-framed) predicting PNG files as `bench predict` does — read, frame, encode
    through an empty embedding cache, decode, put each mask back on its input's grid, write it as PNG —
    against the bare image encoder, prompt head and mask decoder on the same framed images, already
    preprocessed and on the device. The head's weights do not change the cost: a fresh one is used."""
    from bench.apply.predict import LoadedRun, frame_inputs, predict_masks
    from bench.data.framing import output_name, write_mask

    spec = RunSpec(method="prompt-module", dataset="hc18", task="head", labels="box", shots=10, draw=0, seed=0,
                   budget="quick", backbone=backbone.name, checkpoint=str(checkpoint) if checkpoint else None)
    method_cls = METHODS.get("prompt-module")
    hparams = method_cls.resolve_hparams("quick")
    method = method_cls(hparams)
    method.head.to(backbone.device).eval()
    ctx = RunContext(spec=spec, hparams=hparams, device=backbone.device)
    if ctx.backbone is not backbone:  # loaded once per process: the spec names the backbone under test
        raise RuntimeError("the benchmark's run context holds another backbone than the one under test")
    workdir = Path(tempfile.mkdtemp(prefix="bench-perf-predict-"))
    inputs, outputs = workdir / "images", workdir / "masks"
    inputs.mkdir()
    outputs.mkdir()
    files = []
    for index, picture in enumerate(random_images(images, shape, seed)):
        files.append(inputs / f"{index:03d}.png")
        cv2.imwrite(str(files[-1]), picture)
    run = LoadedRun({"run_id": "perf"}, None, method, ctx, DATASETS.get("hc18")(workdir))  # type: ignore[arg-type]
    size = backbone.encode_batch_size
    framed_images = [plane.image for framed in frame_inputs(run, files) for plane in framed.planes]
    batches = [torch.stack([backbone.preprocess(image) for image in framed_images[start : start + size]])
               .to(backbone.device) for start in range(0, images, size)]  # fmt: skip
    shapes = [image.shape[:2] for image in framed_images]

    @torch.inference_mode()
    def bare() -> None:
        for batch in batches:
            embeddings = backbone.image_encoder(batch)
            sparse, dense = method.head(embeddings)
            low_res = backbone.decode(embeddings, sparse, dense)
            for index in range(len(batch)):
                torch.sigmoid(backbone.to_image(low_res[index : index + 1], shapes[index])).cpu()

    def harness() -> None:
        with tempfile.TemporaryDirectory(prefix="bench-perf-", dir=workdir) as cache:
            with environment_variable("BENCH_CACHE", cache):
                for framed, mask, _ in predict_masks(run, frame_inputs(run, files)):
                    write_mask(framed.source, mask, outputs / output_name(framed.source.path))

    try:
        bare()  # warm-up: first-call allocations and kernel selection are not what is measured
        harness_rate, bare_rate = median_rates(harness, bare, images, repeats, backbone.device)
    finally:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return Comparison(
        what="predict",
        harness="bench predict path (PNG in → PNG out, empty cache)",
        reference="bare encoder + prompt head + decoder forward",
        backbone=backbone.name,
        device=str(backbone.device),
        images=images,
        batch_size=size,
        harness_per_second=harness_rate,
        reference_per_second=bare_rate,
    )
