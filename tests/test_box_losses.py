"""The weak-box losses against hand-computed values and a naive band-mask formulation."""

from __future__ import annotations

import math

import pytest
import torch

from bench.data.samples import Box
from bench.method.box_losses import (
    BoxLossSettings,
    band_masses,
    box_emptiness,
    box_loss,
    log_barrier,
    size_prior,
    tightness_prior,
)

T = 5.0
PSI_5 = 25.0 + math.log(25) / 5 + 0.2  # ψ(5) on the linear branch: 5t − log(1/t²)/t + 1/t = 25.8438


def psi_and_slope(z: float) -> tuple[float, float]:
    point = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    value = log_barrier(point, T)
    value.backward()
    return value.item(), point.grad.item()


def test_barrier_value_and_slope_are_continuous_at_the_switch() -> None:
    switch = -1 / T**2
    value, slope = psi_and_slope(switch)
    assert value == pytest.approx(0.6438, abs=1e-4)
    assert slope == pytest.approx(5.0)
    for side in (-1e-7, 1e-7):
        near_value, near_slope = psi_and_slope(switch + side)
        assert near_value == pytest.approx(0.6438, abs=1e-4)
        assert near_slope == pytest.approx(5.0, rel=1e-4)


def test_barrier_branches() -> None:
    assert psi_and_slope(-1.0) == pytest.approx((0.0, 1 / T))  # −log(1)/t; slope −1/(t z)
    assert psi_and_slope(5.0) == pytest.approx((PSI_5, T))
    assert PSI_5 == pytest.approx(25.84, abs=5e-3)
    # a satisfied-by-far constraint still has a finite gradient, and a violated one no NaN
    for z in (-1e6, 0.0, 1e3):
        value, slope = psi_and_slope(z)
        assert math.isfinite(value) and math.isfinite(slope)


def test_an_empty_band_of_width_five_costs_psi_of_five() -> None:
    probabilities = torch.zeros(12, 12, dtype=torch.float64)
    box = Box(x0=3, y0=2, x1=7, y1=6)  # 5×5: one row band and one column band, both width 5
    widths, masses = band_masses(probabilities, box)
    assert widths.tolist() == [5, 5]
    assert masses.tolist() == [0, 0]
    assert tightness_prior(probabilities, box).item() == pytest.approx(2 * PSI_5)


def test_the_band_term_falls_as_its_mass_grows() -> None:
    box = Box(x0=3, y0=2, x1=7, y1=6)
    values = []
    for level in (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0):
        probabilities = torch.zeros(12, 12, dtype=torch.float64)
        probabilities[2:7, 3:8] = level
        values.append(tightness_prior(probabilities, box).item())
    assert all(later < earlier for earlier, later in zip(values, values[1:], strict=False))
    # a band full of foreground (mass 25 ≥ width 5) is satisfied: ψ(5 − 25) = −log(20)/t per band
    assert values[-1] == pytest.approx(2 * -math.log(20) / T)


def test_bands_of_an_odd_box_end_with_a_remainder() -> None:
    probabilities = torch.ones(30, 30, dtype=torch.float64)
    box = Box(x0=1, y0=4, x1=12, y1=10)  # 12 columns wide, 7 rows high
    widths, masses = band_masses(probabilities, box)
    # row bands (span 12 columns): 5 rows, then 2; column bands (span 7 rows): 5, 5, 2 columns
    assert widths.tolist() == [5, 2, 5, 5, 2]
    assert masses.tolist() == [60, 24, 35, 35, 14]


def naive_tightness(probabilities: torch.Tensor, box: Box, band: int = 5) -> torch.Tensor:
    """Every band as a full-size mask, as the published code does."""
    height, width = probabilities.shape
    total = probabilities.new_zeros(())
    for rows in (True, False):
        first, last = (box.y0, box.y1) if rows else (box.x0, box.x1)
        for start in range(first, last + 1, band):
            stop = min(start + band, last + 1)
            mask = torch.zeros(height, width, dtype=probabilities.dtype)
            if rows:
                mask[start:stop, box.x0 : box.x1 + 1] = 1
            else:
                mask[box.y0 : box.y1 + 1, start:stop] = 1
            total = total + log_barrier((stop - start) - (mask * probabilities).sum(), T)
    return total


@pytest.mark.parametrize("seed", range(6))
def test_row_column_sums_match_naive_band_masks(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    height, width = 37, 41
    x0, x1 = sorted(torch.randint(0, width, (2,), generator=generator).tolist())
    y0, y1 = sorted(torch.randint(0, height, (2,), generator=generator).tolist())
    box = Box(x0, y0, x1, y1)
    logits = (3 * torch.randn(height, width, generator=generator, dtype=torch.float64)).requires_grad_(True)
    fast = tightness_prior(torch.sigmoid(logits), box)
    (fast_grad,) = torch.autograd.grad(fast, logits)
    slow = naive_tightness(torch.sigmoid(logits), box)
    (slow_grad,) = torch.autograd.grad(slow, logits)
    assert fast.item() == pytest.approx(slow.item(), rel=1e-10)
    assert torch.allclose(fast_grad, slow_grad, rtol=1e-9, atol=1e-12)
    assert fast_grad.abs().sum() > 0


def uniform_inside(size: float, box: Box, shape: tuple[int, int] = (20, 20)) -> torch.Tensor:
    """A map with soft size ``size`` spread evenly over ``box``, zero elsewhere."""
    probabilities = torch.zeros(shape, dtype=torch.float64)
    probabilities[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1] = size / box.area
    return probabilities.requires_grad_(True)


def test_size_prior_inside_the_bounds_is_on_both_log_branches() -> None:
    box = Box(x0=4, y0=5, x1=13, y1=14)  # A = 100, bounds [50, 90]
    probabilities = uniform_inside(70.0, box)
    value = size_prior(probabilities, box)
    value.backward()
    # ψ(70 − 90) + ψ(50 − 70) = 2·(−log 20 / t), divided by A
    assert value.item() == pytest.approx(2 * -math.log(20) / T / 100)
    # the two log slopes, 1/(t·20) and −1/(t·20), cancel at the centre of the interval
    assert probabilities.grad[box.y0, box.x0].item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("size", "violated_sign"), [(95.0, 1), (40.0, -1)])
def test_a_violated_size_bound_grows_linearly_with_slope_t_over_a(size: float, violated_sign: int) -> None:
    box = Box(x0=4, y0=5, x1=13, y1=14)
    area = 100.0
    probabilities = uniform_inside(size, box)
    size_prior(probabilities, box).backward()
    slope = probabilities.grad[box.y0, box.x0].item()  # dLoss/dV: V is the plain sum of p
    if violated_sign > 0:  # V − 0.9A = 5 > 0 violated; 0.5A − V = −45 on the log branch
        satisfied_slope = -1 / (T * (size - 50)) / area
        violated_value = T * 5 + math.log(25) / T + 1 / T
        satisfied_value = -math.log(45) / T
    else:  # 0.5A − V = 10 > 0 violated; V − 0.9A = −50 on the log branch
        satisfied_slope = 1 / (T * (90 - size)) / area
        violated_value = T * 10 + math.log(25) / T + 1 / T
        satisfied_value = -math.log(50) / T
    assert slope == pytest.approx(violated_sign * T / area + satisfied_slope)
    assert size_prior(probabilities, box).item() == pytest.approx((violated_value + satisfied_value) / area)
    # linear growth: one more unit of violation adds t/A (less the small change of the log term)
    further = size_prior(uniform_inside(size + violated_sign, box), box).item()
    change = further - size_prior(probabilities, box).item()
    assert change == pytest.approx(T / area, rel=0.01)


@pytest.mark.parametrize("area_scale", [1, 4])
def test_the_box_fraction_size_barrier_pulls_inside_the_bounds_whatever_the_box_area(area_scale: int) -> None:
    box = Box(x0=0, y0=0, x1=10 * area_scale - 1, y1=9)  # A = 100 or 400
    area, shape = float(box.area), (20, 50)
    probabilities = uniform_inside(0.6 * area, box, shape)  # r = 0.6: inside [0.5, 0.9], below the middle
    value = size_prior(probabilities, box, on_box_fraction=True)
    value.backward()
    assert value.item() == pytest.approx(-(math.log(0.3) + math.log(0.1)) / T)  # ψ(0.6 − 0.9) + ψ(0.5 − 0.6)
    # dLoss/dr = 1/(t·0.3) − 1/(t·0.1) < 0 (grow towards 0.7), then dr/dV = 1/A
    pull = (1 / (T * 0.3) - 1 / (T * 0.1)) / area
    assert probabilities.grad[0, 0].item() == pytest.approx(pull)
    # the pixel form's pull at the same fraction is A times weaker: the barrier sees V − 0.9A in pixels
    pixels = uniform_inside(0.6 * area, box, shape)
    size_prior(pixels, box).backward()
    assert pixels.grad[0, 0].item() == pytest.approx(pull / area)
    # past a bound both forms have the same slope, t per unit of fraction
    below = uniform_inside(0.4 * area, box, shape)
    size_prior(below, box, on_box_fraction=True).backward()
    assert below.grad[0, 0].item() == pytest.approx((-T + 1 / (T * 0.5)) / area)


def test_emptiness_averages_over_all_outside_pixels_of_the_batch() -> None:
    small = torch.zeros(6, 6, dtype=torch.float64)  # 36 − 4 = 32 outside pixels, p = 0.5: log 2 each
    small[1:3, 1:3] = 10.0  # inside the box: ignored
    large = torch.full((10, 10), math.log(3), dtype=torch.float64)  # p = 0.75: −log(0.25) = log 4 each
    large[0:5, 0:5] = -10.0  # inside: ignored; 75 outside pixels
    boxes = [Box(1, 1, 2, 2), Box(0, 0, 4, 4)]
    expected = (32 * math.log(2) + 75 * math.log(4)) / (32 + 75)
    assert box_emptiness([small, large], boxes).item() == pytest.approx(expected)


def test_box_loss_weights_its_terms() -> None:
    logits = torch.full((12, 12), -50.0, dtype=torch.float64)  # p ≈ 0 everywhere
    box = Box(x0=2, y0=2, x1=6, y1=6)  # 5×5, A = 25
    loss = box_loss([logits], [box])
    size = (T * 12.5 + math.log(25) / T + 1 / T - math.log(22.5) / T) / 25  # ψ(0.5A − 0) + ψ(0 − 0.9A)
    assert loss.emptiness.item() == pytest.approx(0.0, abs=1e-15)
    assert loss.tightness.item() == pytest.approx(2 * PSI_5)
    assert loss.size.item() == pytest.approx(size)
    assert loss.total.item() == pytest.approx(1e-4 * 2 * PSI_5 + 1e-2 * size)


def test_box_loss_gradient_pulls_inside_up_and_outside_down() -> None:
    # p ≈ 0.018 everywhere: every prior is violated from below, the outside is not yet empty
    logits = torch.full((2, 16, 16), -4.0, requires_grad=True)
    boxes = [Box(2, 3, 9, 12), Box(5, 5, 14, 10)]
    box_loss(list(logits), boxes).total.backward()
    for index, box in enumerate(boxes):
        grad = logits.grad[index]
        inside = grad[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1]
        outside_mask = torch.ones(16, 16, dtype=torch.bool)
        outside_mask[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1] = False
        assert (inside < 0).all()  # descent raises the logits inside the box
        assert (grad[outside_mask] > 0).all()  # and lowers them outside


def test_the_perf_reference_is_the_band_mask_formulation() -> None:
    from bench.perf.loss import band_mask_tightness_prior

    generator = torch.Generator().manual_seed(11)
    probabilities = torch.rand(29, 33, generator=generator, dtype=torch.float64)
    box = Box(x0=3, y0=2, x1=26, y1=23)  # 24×22: remainder bands on both axes
    expected = naive_tightness(probabilities, box)
    assert band_mask_tightness_prior(probabilities, box).item() == pytest.approx(expected.item(), rel=1e-12)
    assert tightness_prior(probabilities, box).item() == pytest.approx(expected.item(), rel=1e-12)


def test_bench_perf_loss_reports_both_variants() -> None:
    from typer.testing import CliRunner

    from bench.cli import app

    result = CliRunner().invoke(app, ["perf", "loss", "--size", "40", "--batch", "2", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    rows = {name: line for line in lines for name in ("row/column sums", "band masks") if " peak " in line
            and line.strip().startswith(name)}  # fmt: skip
    assert len(rows) == 2
    losses = {line.rsplit("loss", 1)[1].strip() for line in rows.values()}
    assert len(losses) == 1  # both formulations compute the same value
    assert "band masks / row-column sums: memory ×" in result.output
    refused = CliRunner().invoke(app, ["perf", "loss", "--box-fraction", "0"])
    assert refused.exit_code == 2 and "--box-fraction" in refused.output


def test_box_loss_settings_reach_each_term() -> None:
    torch.manual_seed(0)
    logits = [torch.randn(40, 50, dtype=torch.float64), torch.randn(30, 30, dtype=torch.float64)]
    boxes = [Box(5, 8, 30, 25), Box(2, 2, 20, 27)]
    settings = BoxLossSettings(barrier_t=9.0, band_width=3, size_bounds=(0.4, 0.8), tightness_weight=0.1,
                               size_weight=0.3)  # fmt: skip
    parts = box_loss(logits, boxes, settings)
    probabilities = [torch.sigmoid(logit) for logit in logits]
    tightness = sum(tightness_prior(p, box, 3, 9.0) for p, box in zip(probabilities, boxes, strict=True)) / 2
    size = sum(size_prior(p, box, (0.4, 0.8), 9.0) for p, box in zip(probabilities, boxes, strict=True)) / 2
    assert parts.tightness.item() == pytest.approx(tightness.item())
    assert parts.size.item() == pytest.approx(size.item())
    expected = parts.emptiness + 0.1 * tightness + 0.3 * size
    assert parts.total.item() == pytest.approx(expected.item())
    assert parts.total.item() != pytest.approx(box_loss(logits, boxes).total.item())
