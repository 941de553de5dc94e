"""How many images the image encoder takes per forward pass, chosen by measurement on the device at hand.

No constant is right everywhere: on the 2-core CPU this project is measured on, LiteMedSAM encodes fastest one
image at a time (larger batches were up to 1.8× slower per image: their activations no longer fit the caches),
while a GPU wants the largest batch its memory allows. So the batch size is found while encoding real images:
nothing is encoded for the measurement alone, and the slower sizes tried on the way cost a few batches once per
process and backbone.
"""

from __future__ import annotations

# a larger batch must beat the one before it by this fraction of the seconds per image to be tried further:
# below it, the difference is within what a busy machine's timings wander by
REQUIRED_GAIN = 0.05


class EncodeBatchSizer:
    """Doubles the batch (1, 2, 4, … up to ``largest``) while the seconds per image fall by more than
    ``REQUIRED_GAIN``, then keeps the fastest size measured.

    ``size()`` says how many images the next forward should take; ``record(images, seconds)`` is told how the
    forward went. The first forward warms the model up (allocator, kernels, caches) and is not compared; a
    batch of another size than asked for (the last, partial one) measures nothing.
    """

    def __init__(self, largest: int) -> None:
        if largest < 1:
            raise ValueError(f"the largest encoding batch must be at least 1, not {largest}")
        self.largest = largest
        self.seconds_per_image: dict[int, float] = {}
        self.chosen: int | None = 1 if largest == 1 else None
        self._warmed_up = False

    def size(self) -> int:
        if self.chosen is not None:
            return self.chosen
        if not self.seconds_per_image:
            return 1
        return min(2 * max(self.seconds_per_image), self.largest)

    def record(self, images: int, seconds: float) -> None:
        if self.chosen is not None:
            return
        if not self._warmed_up:
            self._warmed_up = True
            return
        if images != self.size():
            return
        self.seconds_per_image[images] = seconds / images
        if images == 1:
            return
        previous = self.seconds_per_image[max(size for size in self.seconds_per_image if size < images)]
        improving = self.seconds_per_image[images] < (1 - REQUIRED_GAIN) * previous
        if not improving or images >= self.largest:
            self.chosen = min(self.seconds_per_image, key=self.seconds_per_image.__getitem__)
