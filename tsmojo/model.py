"""TSMojoModel: patch tokens -> stack of B'MOJO blocks -> direct multi-patch quantile head."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from tsmojo.config import TSMojoConfig
from tsmojo.covariate_hint import covariate_regression
from tsmojo.layers import FUTURE_COVARIATE, PAST_COVARIATE, TARGET, BMojoBlock, GroupLayout, ResidualMLP, RMSNorm
from tsmojo.metrics import pinball_loss
from tsmojo.seasonality import detect_period, seasonal_gain, seasonal_hint

_MAX_ASINH = 30.0  # sinh(30) ~ 5e12 standard deviations: far beyond any real forecast
# How far (in model units, asinh of scaled values) a forecast quantile may lie beyond the context's
# furthest value. On the 17 dev datasets tsmojo-mini-v8's quantiles lie at most 1.5 beyond it (2.8
# for 2 of car_parts' 2,674 series), but a context that was constant for 200 steps and then jumped
# once from 10 to 20 got a 90% quantile 5.3 beyond, at 3,017. Bounding the output, as a token
# vocabulary bounds Chronos', keeps such forecasts within about e^3 = 20 times the furthest deviation.
FORECAST_MARGIN = 3.0
# Default pass size on CPU. tsmojo-mini on a 2-core Xeon (2 MiB L2 per core): passes of 2k-4k
# tokens run up to 25% faster per token than one pass over 16 x 32k points, whose activations
# spill out of cache; passes much smaller than 1k tokens lose that again to per-call overhead.
INFERENCE_TOKENS_PER_PASS = 4096

TRAINING_SUMMARY_FILE = "training_summary.json"  # written beside the weights by ``tsmojo pretrain``

# Pretraining contexts hold 64 points or more. A context of one value, or of a few equal ones, has
# no spread, so it is scaled by its level and reads as a few zeros, an input the model never met:
# tsmojo-mini-v8 forecast the context [100] as about 1,057, with a 90% quantile of 322,000, and
# three equal values 35% too high. From five equal values on, its median stays within about 2% of
# the value (tests/test_context.py measures both).
MIN_CONSTANT_CONTEXT = 5


def extend_short_constant_rows(context: torch.Tensor, count: int = MIN_CONSTANT_CONTEXT) -> torch.Tensor:
    """Rows of ``context`` (B, L), NaN where missing, whose observed values are fewer than
    ``count`` and all equal get that value in their missing steps nearest before their last
    observation, until they hold ``count`` observations: [7] becomes [7, 7, 7, 7, 7] and
    [5, NaN x 100, 5, 5] ends in five 5s. Rows that vary, however short, and longer rows are left
    as they are. The result is left-padded with NaN where a row needs the room (B, L' >= L);
    forecasts are right-aligned, so that padding changes nothing else."""
    observed = ~torch.isnan(context)
    num_observed = observed.sum(1)
    low = torch.where(observed, context, torch.full_like(context, float("inf"))).amin(1)
    high = torch.where(observed, context, torch.full_like(context, float("-inf"))).amax(1)
    stub = (num_observed >= 1) & (num_observed < count) & (low == high)
    if not bool(stub.any()):
        return context
    fill = torch.where(stub, count - num_observed, torch.zeros_like(num_observed))
    length = context.shape[1]
    last = length - 1 - observed.flip(1).int().argmax(1)
    room = int((fill - (last + 1 - num_observed)).clamp(min=0).max())  # missing steps before `last`
    context = F.pad(context, (room, 0), value=float("nan"))
    steps = torch.arange(length + room, device=context.device)[None]
    gap = torch.isnan(context) & (steps < (last + room)[:, None])
    nearest_first = gap.flip(1).cumsum(1).flip(1)  # 1 for the gap step nearest before `last`
    filled = gap & (nearest_first <= fill[:, None])
    return torch.where(filled, low[:, None], context)


def loss_points(
    future_target: torch.Tensor, roles: torch.Tensor, horizon: int, target_weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The points the training losses read: the truth cut or NaN-padded to ``horizon`` steps
    (B, horizon), and each point's weight (B, horizon), its row's ``target_weights`` (default 1)
    at the target rows' observed steps and 0 elsewhere."""
    target = future_target.float()[:, :horizon]
    target = F.pad(target, (0, horizon - target.shape[1]), value=float("nan"))
    weight = (~torch.isnan(target) & (roles == TARGET)[:, None]).float()
    if target_weights is not None:
        weight = weight * target_weights.to(weight.device, torch.float32)[:, None]
    return target, weight


def read_training_summary(directory: str | Path) -> dict:
    """The training summary saved in a model directory, or ``{}`` if it has none."""
    path = Path(directory) / TRAINING_SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def rows_per_pass(group_ids: torch.Tensor, tokens_per_row: torch.Tensor, tokens_per_pass: int) -> list[torch.Tensor]:
    """Row indices of successive passes over a batch.

    A pass holds whole groups whose rows have one token length, a group counting as its longest
    row: rows never share a pass with longer ones, so a row's computation (its padding, and which
    kernel runs: short sequences take other code paths) never depends on longer series in its
    batch, and short rows do not pay for long rows' padding. Groups of one length are packed in
    order of first appearance while a pass holds at most ``tokens_per_pass`` tokens (a larger
    group gets a pass of its own). Passes come shortest first."""
    ids, lengths = group_ids.detach().cpu(), tokens_per_row.detach().cpu().long()
    _, inverse = torch.unique(ids, return_inverse=True)
    num_groups = int(inverse.max()) + 1 if len(ids) else 0
    first_seen = torch.full((num_groups,), len(ids), dtype=torch.long)
    first_seen.scatter_reduce_(0, inverse, torch.arange(len(ids)), reduce="amin")
    group_length = torch.zeros(num_groups, dtype=torch.long).scatter_reduce_(0, inverse, lengths, reduce="amax")
    # Groups by length, then by first appearance (both below len(ids) * max length + len(ids)).
    group_order = torch.argsort(group_length * (len(ids) + 1) + first_seen)
    rank = torch.argsort(group_order)[inverse]  # each row's group, numbered in pass order
    order = torch.argsort(rank, stable=True)
    sizes = torch.bincount(rank, minlength=num_groups).tolist()
    length_of_rank = group_length[group_order].tolist()
    passes: list[torch.Tensor] = []
    current: list[torch.Tensor] = []
    filled, start, current_length = 0, 0, None
    for size, length in zip(sizes, length_of_rank):
        tokens = size * length
        if current and (length != current_length or filled + tokens > tokens_per_pass):
            passes.append(torch.cat(current))
            current, filled = [], 0
        current.append(order[start : start + size])
        filled += tokens
        start += size
        current_length = length
    if current:
        passes.append(torch.cat(current))
    return [rows.to(group_ids.device) for rows in passes]


@dataclass
class Hints:
    """Per-row hints as patches (B, N + F, p) in model space, NaN where a hint has no value; None
    when the config disables that hint."""

    seasonal: torch.Tensor | None = None  # the value one detected period earlier (tsmojo.seasonality)
    covariate: torch.Tensor | None = None  # the regression on known-future covariates (tsmojo.covariate_hint)
    # (B, GATE_FEATURES): how well the seasonal hint fits the context (hint_fit_features); None
    # where the config has no seasonal hint or no shortcut to gate.
    fit: torch.Tensor | None = None

    def enabled(self) -> list[torch.Tensor]:
        return [h for h in (self.seasonal, self.covariate) if h is not None]


GATE_FEATURES = 1


def hint_fit_features(scaled: torch.Tensor, period: torch.Tensor) -> torch.Tensor:
    """(B, GATE_FEATURES) for the hint gate: the log gain of copying the last cycle over copying
    the last step on the context (tsmojo.seasonality.seasonal_gain); 0 where a row has no period.

    Whether a copied cycle will beat the head is a property of the whole context that a small
    model's last layer does not reliably carry. The gain is scale-free on purpose: a gate that
    also read the seasonal-naive error itself learnt "small error: copy", which smooth trending
    series (a short detected period, copied a few steps late) also satisfy, and it lost 25% on
    fred_md and 9% on m4_weekly (tsmojo/recipes/mini_v11_fit.yaml)."""
    return torch.nan_to_num(seasonal_gain(scaled, period).log()[:, None], nan=0.0, posinf=0.0, neginf=0.0)


def values_and_presence(patches: torch.Tensor) -> torch.Tensor:
    """(..., p) values with NaN -> (..., 2p): the values with NaN as 0, then 1 where present."""
    return torch.cat([torch.nan_to_num(patches, nan=0.0), (~torch.isnan(patches)).float()], dim=-1)


def zero_initialised(mlp: ResidualMLP) -> ResidualMLP:
    """``mlp`` with its output layers zeroed: it adds nothing until training moves it."""
    for layer in (mlp.out, mlp.skip):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    return mlp


def full_precision(device: torch.device):
    """Turns autocast off: the embedding and the head run in float32 inside a bf16 forward."""
    return torch.autocast(device.type, enabled=False)


@dataclass
class TokenMasks:
    """Per-token masks, (B, N + 1 + F) each. ``sequence_valid``: the token takes part (observed
    context patches, the register and every future token); ``memory_candidate``: it may enter the
    eidetic memory (observed context patches only); ``observed``: it holds data that other rows
    of its group may read (observed context patches, the register, future patches with known
    values)."""

    sequence_valid: torch.Tensor
    memory_candidate: torch.Tensor
    observed: torch.Tensor


@dataclass
class TSMojoOutput:
    """quantiles: (batch, steps, num_quantiles) in the data's units. prediction: the same
    quantiles in model space (the asinh of the scaled values) before the forecast bound, which
    the losses read. loss: training loss or None."""

    quantiles: torch.Tensor
    prediction: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    quantile_loss: torch.Tensor | None = None


class TSMojoModel(nn.Module):
    """Zero-shot probabilistic forecaster.

    Each row of a batch is one series: a target, a past-only covariate or a known-future
    covariate. Rows sharing a group id exchange information at every patch; other rows never
    influence each other.
    """

    quantile_levels: torch.Tensor  # a buffer (register_buffer below): declared for type checkers

    def __init__(self, config: TSMojoConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or TSMojoConfig()
        d, p = config.d_model, config.patch_size
        self.embed = ResidualMLP(2 * p, config.d_ff, d)
        self.role_embedding = nn.Embedding(3, d)
        self.future_embedding = nn.Parameter(torch.zeros(d))
        self.register_token = nn.Parameter(torch.randn(d) * 0.02)
        # The hint embeddings start at zero, so a model trained without a hint keeps its forecasts
        # when the hint is added and training continues (pretrain --init-from).
        if config.seasonal_hint:
            self.hint_embed = zero_initialised(ResidualMLP(2 * p, config.d_ff // 4, d))
        if config.covariate_hint:
            self.covariate_hint_embed = zero_initialised(ResidualMLP(2 * p, config.d_ff // 4, d))
        if config.hint_shortcut:
            # Zero at first as well: a trained model keeps its forecasts until training opens it.
            self.hint_gate = nn.Linear(d + GATE_FEATURES, p * (int(config.seasonal_hint) + int(config.covariate_hint)))
            nn.init.zeros_(self.hint_gate.weight)
            nn.init.zeros_(self.hint_gate.bias)
        self.blocks = nn.ModuleList(BMojoBlock(config) for _ in range(config.num_layers))
        self.final_norm = RMSNorm(d)
        self.head = ResidualMLP(d, config.d_ff, p * len(config.quantiles))
        self.register_buffer("quantile_levels", torch.tensor(config.quantiles), persistent=False)

    @property
    def median_index(self) -> int:
        """Position of the quantile level nearest 0.5 in ``config.quantiles``."""
        levels = self.config.quantiles
        return min(range(len(levels)), key=lambda i: abs(levels[i] - 0.5))

    # -- scaling ---------------------------------------------------------------------------
    def scale_stats(
        self, context: torch.Tensor, scale_windows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """NaN-aware per-row location and scale, (B, 1) each, of each row's last ``scale_windows``
        steps (default: the config's ``scale_window`` for every row; 0 means the whole context),
        or of the whole context when that window holds no observation."""
        length = context.shape[1]
        if scale_windows is None:
            window = self.config.scale_window
            if not window or length <= window:
                return self.nan_aware_stats(context)
            recent = context[:, -window:]
        else:
            windows = scale_windows.to(context.device).long()[:, None]
            start = torch.where(windows > 0, length - windows, torch.zeros_like(windows))
            in_window = torch.arange(length, device=context.device)[None] >= start
            recent = torch.where(in_window, context, torch.full_like(context, float("nan")))
        loc, scale = self.nan_aware_stats(recent)
        empty = torch.isnan(recent).all(-1, keepdim=True)
        if bool(empty.any()):
            whole_loc, whole_scale = self.nan_aware_stats(context)
            loc, scale = torch.where(empty, whole_loc, loc), torch.where(empty, whole_scale, scale)
        return loc, scale

    @staticmethod
    def nan_aware_stats(context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of each row's observed values, (B, 1) each."""
        observed = ~torch.isnan(context)
        count = observed.sum(-1, keepdim=True)
        filled = torch.where(observed, context, torch.zeros_like(context))
        loc = filled.sum(-1, keepdim=True) / count.clamp(min=1)
        var = (torch.where(observed, context - loc, torch.zeros_like(context)) ** 2).sum(-1, keepdim=True)
        std = torch.sqrt(var / count.clamp(min=1))
        # A constant series has no spread to scale by; fall back to its magnitude, then to 1.
        fallback = torch.where(loc.abs() > 0, loc.abs(), torch.ones_like(loc))
        scale = torch.where(std > 1e-10 * (1.0 + loc.abs()), std, fallback)
        return loc, scale

    @staticmethod
    def to_model_space(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return torch.asinh((x - loc) / scale)

    @staticmethod
    def from_model_space(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return loc + scale * torch.sinh(z.clamp(-_MAX_ASINH, _MAX_ASINH))

    def seasonal_period(self, scaled: torch.Tensor) -> torch.Tensor:
        """The period the seasonal hint copies for each row of ``scaled`` (B, L), 0 where none."""
        cfg = self.config
        return detect_period(scaled, cfg.hint_max_period, cfg.hint_window, min_correlation=0.2)

    def hints(self, patches: torch.Tensor, roles: torch.Tensor, layout: GroupLayout, num_future: int) -> Hints:
        """The hints the config enables, as patches (B, N + F, p) in model space, NaN where none."""
        cfg, batch = self.config, patches.shape[0]
        hints = Hints()
        if cfg.seasonal_hint:
            scaled = patches[:, :-num_future].reshape(batch, -1)
            period = self.seasonal_period(scaled)
            future_steps = num_future * cfg.patch_size
            hints.seasonal = seasonal_hint(scaled, period, future_steps, cfg.seasonal_hint_drift).view_as(patches)
            if cfg.hint_shortcut:
                hints.fit = hint_fit_features(scaled[:, -cfg.hint_window :], period)
        if cfg.covariate_hint:
            values = patches.reshape(batch, -1)
            context_steps = values.shape[1] - num_future * cfg.patch_size
            fitted = covariate_regression(values, context_steps, roles, layout, cfg.hint_window)
            hints.covariate = fitted.view_as(patches)
        return hints

    def hint_shortcut(self, x: torch.Tensor, hints: Hints, prediction: torch.Tensor) -> torch.Tensor:
        """``prediction`` (B, F * p, Q) moved toward the hints by gates read from the future tokens.

        Through the embedding, a hint must survive every block and the head to reach the
        output, and a 2M-parameter model redraws a copied cycle only approximately (it lost to
        seasonal naive on near-periodic hourly series). Each gate moves every quantile by its
        share of the distance from the forecast's median to a hint, per step: at 1 the median is
        the hint exactly and the spread is the head's; at 0 the forecast is the head's alone.
        The distance, not the hint itself, is what the gate scales, so that a gate trained on a
        frozen model (``trainable="hint_gate"``) can copy a cycle without undoing the head.

        x: (B, F, d) future tokens after the last block; the gate also reads ``hints.fit``.
        """
        batch, num_future, p = x.shape[0], x.shape[1], self.config.patch_size
        fit = hints.fit if hints.fit is not None else x.new_zeros(batch, GATE_FEATURES)
        gates = self.hint_gate(torch.cat([x, fit[:, None].expand(-1, num_future, -1)], dim=-1))
        gates = gates.view(batch, num_future, -1, p)
        slope = self.config.hint_gate_gain_slope
        if slope is not None:  # the seasonal hint comes first in hints.enabled()
            damping = torch.sigmoid(slope * fit[:, :1])  # (B, 1): fit[:, 0] is the log seasonal gain
            kinds = gates.shape[2]
            damping = torch.cat([damping, damping.new_ones(batch, kinds - 1)], dim=1)
            gates = gates * damping[:, None, :, None]
        future_hints = torch.stack([h[:, -num_future:] for h in hints.enabled()], dim=2)  # (B, F, kinds, p)
        median = prediction[..., self.median_index].view(batch, num_future, 1, p)
        distance = torch.nan_to_num(future_hints - median, nan=0.0)  # no hint: no move
        shift = (gates * distance).sum(2).reshape(batch, num_future * p)
        return prediction + shift[..., None]

    # -- forward ---------------------------------------------------------------------------
    def forward(
        self,
        context: torch.Tensor,
        group_ids: torch.Tensor | None = None,
        roles: torch.Tensor | None = None,
        future_covariates: torch.Tensor | None = None,
        num_output_patches: int | None = None,
        future_target: torch.Tensor | None = None,
        target_weights: torch.Tensor | None = None,
        scale_windows: torch.Tensor | None = None,
    ) -> TSMojoOutput:
        """Forecast ``num_output_patches * patch_size`` steps for every row.

        Args:
            context: (B, L) past values, NaN where missing. Rows may be left-padded with NaN.
            group_ids: (B,) int; rows with equal ids attend to each other. Default: all distinct.
            roles: (B,) int; 0 target, 1 past-only covariate, 2 known-future covariate. Default: targets.
            future_covariates: (B, H) known future values of role-2 rows (NaN elsewhere), H <= horizon.
            num_output_patches: patches to produce, 1..max_output_patches. Default: the maximum.
            future_target: (B, H) truth for training; NaN entries and non-target rows are ignored.
            target_weights: (B,) loss weight of each row's future points. Default: all 1.
            scale_windows: (B,) int, steps at the end of each row that set its location and scale
                (0: the whole context). Default: ``config.scale_window``. Pretraining draws them at
                random so that one model reads several scalings.
        """
        cfg = self.config
        batch, device = context.shape[0], context.device
        num_future = num_output_patches or cfg.max_output_patches
        if not 1 <= num_future <= cfg.max_output_patches:
            raise ValueError(f"num_output_patches must be in 1..{cfg.max_output_patches}, got {num_future}")
        group_ids = torch.arange(batch, device=device) if group_ids is None else group_ids.to(device)
        roles = torch.zeros(batch, dtype=torch.long, device=device) if roles is None else roles.to(device).long()

        context = context.float()
        loc, scale = self.scale_stats(context, scale_windows)  # (B, 1) each
        patches = self.patch(context, future_covariates, roles, loc, scale, num_future)  # (B, N + F, p)
        layout = GroupLayout.from_group_ids(group_ids)
        with full_precision(device):
            hints = self.hints(patches, roles, layout, num_future)  # model space, (B, N + F, p) each
        x = self.tokens(patches, hints, roles, num_future)  # (B, N + 1 + F, d): context, register, future
        masks = self.masks(patches, num_future)
        x, innovation_loss = self.encode(x, masks, layout, num_future)  # (B, F, d)
        with full_precision(device):  # the quantiles, in scaled units, keep float32 resolution
            x = self.final_norm(x.float())
            prediction = self.head(x).view(batch, num_future * cfg.patch_size, -1)
            if cfg.hint_shortcut:
                prediction = self.hint_shortcut(x, hints, prediction)

        # The loss reads the unbounded prediction, so training is unchanged.
        bound = patches[:, :-num_future].abs().nan_to_num(nan=0.0).amax(dim=(1, 2))[:, None]  # the scaled context
        bounded = torch.minimum(prediction, (bound + FORECAST_MARGIN)[..., None])
        bounded = torch.maximum(bounded, -(bound + FORECAST_MARGIN)[..., None])
        output = TSMojoOutput(
            quantiles=self.from_model_space(bounded, loc[..., None], scale[..., None]), prediction=prediction
        )
        if future_target is not None:
            output.quantile_loss = self.quantile_loss(prediction, future_target, roles, loc, scale, target_weights)
            output.loss = output.quantile_loss + cfg.innovation_loss_weight * innovation_loss
        return output

    def padded_context_length(self, length: int, num_future: int) -> int:
        """Points a context of ``length`` points is left-padded to: whole chunks of patches, so that
        the eidetic memory's chunk boundaries count from the context's end.

        Memory and fading-band keys are at least a window away from their query, so when every
        token of a row (context, register, future) lies within one window, nothing reads them, and
        chunk boundaries cannot matter: such a context is padded to whole patches only, which
        gives the same result with up to 4x fewer tokens for contexts of a few patches."""
        cfg = self.config
        num_patches = max(-(-length // cfg.patch_size), 1)
        if num_patches + 1 + num_future <= cfg.window:
            return num_patches * cfg.patch_size
        block = cfg.patch_size * cfg.chunk_size
        return max(-(-length // block), 1) * block

    def patch(
        self,
        context: torch.Tensor,
        future_covariates: torch.Tensor | None,
        roles: torch.Tensor,
        loc: torch.Tensor,
        scale: torch.Tensor,
        num_future: int,
    ) -> torch.Tensor:
        """Scaled context and known future values as patches (B, N + F, p), NaN where missing.

        Patches and chunks are right-aligned: the context is left-padded to
        :meth:`padded_context_length`, so a series' tokens and chunk boundaries never depend on
        how much padding the batch added."""
        cfg, batch = self.config, context.shape[0]
        scaled = self.to_model_space(context, loc, scale)
        width = self.padded_context_length(scaled.shape[1], num_future)
        scaled = F.pad(scaled, (width - scaled.shape[1], 0), value=float("nan"))
        horizon = num_future * cfg.patch_size
        future = torch.full((batch, horizon), float("nan"), device=context.device)
        if future_covariates is not None:
            given = future_covariates.float()[:, :horizon]
            future[:, : given.shape[1]] = torch.where(
                (roles == FUTURE_COVARIATE)[:, None], self.to_model_space(given, loc, scale), float("nan")
            )
        return torch.cat([scaled, future], dim=1).view(batch, -1, cfg.patch_size)

    def tokens(self, patches: torch.Tensor, hints: Hints, roles: torch.Tensor, num_future: int) -> torch.Tensor:
        """Embedded patches (values, presence, hints, role), with the register token between
        context and future: (B, N + 1 + F, d)."""
        batch = patches.shape[0]
        with full_precision(patches.device):  # bf16 would round the scaled inputs to 3 significant digits
            tokens = self.embed(values_and_presence(patches))
            if hints.seasonal is not None:
                tokens = tokens + self.hint_embed(values_and_presence(hints.seasonal))
            if hints.covariate is not None:
                tokens = tokens + self.covariate_hint_embed(values_and_presence(hints.covariate))
        tokens = tokens + self.role_embedding(roles)[:, None, :]
        context_tokens, future_tokens = tokens[:, :-num_future], tokens[:, -num_future:]
        register = self.register_token.expand(batch, 1, -1)
        return torch.cat([context_tokens, register, future_tokens + self.future_embedding], dim=1)

    @staticmethod
    def masks(patches: torch.Tensor, num_future: int) -> TokenMasks:
        """Which tokens are valid, may enter the eidetic memory, and are observed (see TokenMasks)."""
        patch_observed = ~torch.isnan(patches).all(-1)
        context_observed = patch_observed[:, :-num_future]
        ones = torch.ones(patches.shape[0], 1 + num_future, dtype=torch.bool, device=patches.device)
        return TokenMasks(
            sequence_valid=torch.cat([context_observed, ones], dim=1),
            memory_candidate=torch.cat([context_observed, ~ones], dim=1),
            observed=torch.cat([context_observed, ones[:, :1], patch_observed[:, -num_future:]], dim=1),
        )

    def encode(
        self, x: torch.Tensor, masks: TokenMasks, layout: GroupLayout, num_future: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The B'MOJO blocks. Returns the future tokens after the last block (B, F, d) and the mean
        innovation loss of the blocks."""
        innovation_losses = []
        for index, block in enumerate(self.blocks):
            # The head reads only the future tokens, so the last block computes only those.
            output_from = x.shape[1] - num_future if index == len(self.blocks) - 1 else 0
            x, innovation_loss = block(
                x, masks.sequence_valid, masks.memory_candidate, masks.observed, layout, output_from
            )
            innovation_losses.append(innovation_loss)
        return x, torch.stack(innovation_losses).mean()

    def quantile_loss(
        self,
        prediction: torch.Tensor,
        future_target: torch.Tensor,
        roles: torch.Tensor,
        loc: torch.Tensor,
        scale: torch.Tensor,
        target_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pinball loss of the target rows' observed future steps, in scaled units, as a mean
        weighted by ``target_weights`` (B,) when given."""
        target, weight = self.loss_target(future_target, roles, prediction.shape[1], loc, scale, target_weights)
        return pinball_loss(prediction, target, self.quantile_levels, weight)

    def loss_target(
        self,
        future_target: torch.Tensor,
        roles: torch.Tensor,
        horizon: int,
        loc: torch.Tensor,
        scale: torch.Tensor,
        target_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The truth a forecast of ``horizon`` steps is scored against, in model space (B, horizon),
        0 where it is missing, and each point's weight (:func:`loss_points`)."""
        target, weight = loss_points(future_target, roles, horizon, target_weights)
        return torch.nan_to_num(self.to_model_space(target, loc, scale), nan=0.0), weight

    @torch.no_grad()
    def forecast(
        self,
        context: torch.Tensor,
        prediction_length: int,
        group_ids: torch.Tensor | None = None,
        roles: torch.Tensor | None = None,
        future_covariates: torch.Tensor | None = None,
        tokens_per_pass: int | None = None,
    ) -> torch.Tensor:
        """Quantile forecasts (B, prediction_length, Q), sorted along Q.

        Beyond the head's reach the median is appended to the context and the model runs again;
        known-future covariates move into the context as their values are passed.

        Rows run in passes of whole groups of one length (see :func:`rows_per_pass`) holding about
        ``tokens_per_pass`` patch tokens (default: 4,096 on CPU, where a pass's activations then
        stay in cache, which keeps the cost per token flat as contexts grow; one pass per length on
        GPUs). Peak memory follows the pass, not the batch. Results do not depend on it.
        """
        cfg = self.config
        if prediction_length < 1:
            raise ValueError(f"prediction_length must be >= 1, got {prediction_length}")
        batch = context.shape[0]
        device = context.device
        group_ids = torch.arange(batch, device=device) if group_ids is None else group_ids.to(device)
        roles = torch.zeros(batch, dtype=torch.long, device=device) if roles is None else roles.to(device)
        context = extend_short_constant_rows(context.float()[:, -cfg.max_context_length :])
        if future_covariates is not None:
            future_covariates = future_covariates.float().to(device)
            future_covariates = F.pad(
                future_covariates, (0, max(0, prediction_length - future_covariates.shape[1])), value=float("nan")
            )
        # A row's width: its observed length as the model pads it for the first forecast step.
        num_future = min(cfg.max_output_patches, -(-prediction_length // cfg.patch_size))
        observed = ~torch.isnan(context)
        first_observed = torch.where(observed.any(1), observed.int().argmax(1), context.shape[1])
        lengths = (context.shape[1] - first_observed).tolist()
        widths = torch.tensor([self.padded_context_length(n, num_future) for n in lengths], dtype=torch.long)
        tokens_per_row = widths // cfg.patch_size + 1 + num_future
        if tokens_per_pass is None:
            tokens_per_pass = INFERENCE_TOKENS_PER_PASS if device.type == "cpu" else int(tokens_per_row.sum())
        out = torch.empty(batch, prediction_length, len(cfg.quantiles), device=device)
        for rows in rows_per_pass(group_ids, tokens_per_row, tokens_per_pass):
            # The pass's widest row's width, cut or left-padded with NaN: a row's input never
            # depends on how wide the batch was.
            width = int(widths[rows.cpu()].max())
            rows_context = context[rows, -width:]
            rows_context = F.pad(rows_context, (width - rows_context.shape[1], 0), value=float("nan"))
            known = None if future_covariates is None else future_covariates[rows]
            out[rows] = self._forecast_rows(rows_context, prediction_length, group_ids[rows], roles[rows], known)
        return out

    def _forecast_rows(
        self,
        context: torch.Tensor,
        prediction_length: int,
        group_ids: torch.Tensor,
        roles: torch.Tensor,
        future_covariates: torch.Tensor | None,
    ) -> torch.Tensor:
        """One pass of :meth:`forecast`: the head's reach at a time, unrolled on the median."""
        cfg = self.config
        pieces = []
        done = 0
        while done < prediction_length:
            remaining = prediction_length - done
            num_patches = min(cfg.max_output_patches, -(-remaining // cfg.patch_size))
            step = min(remaining, num_patches * cfg.patch_size)
            window = None if future_covariates is None else future_covariates[:, done:]
            quantiles = self(context[:, -cfg.max_context_length :], group_ids, roles, window, num_patches).quantiles
            quantiles = quantiles[:, :step].sort(dim=-1).values
            pieces.append(quantiles)
            done += step
            if done < prediction_length:
                appended = quantiles[..., self.median_index]
                if window is not None:
                    known = (roles == FUTURE_COVARIATE)[:, None]
                    appended = torch.where(known, window[:, :step], appended)
                appended = torch.where((roles == PAST_COVARIATE)[:, None], float("nan"), appended)
                context = torch.cat([context, appended], dim=1)
        return torch.cat(pieces, dim=1)

    # -- persistence -----------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``model.safetensors`` and ``config.json`` to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
        (directory / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> TSMojoModel:
        """Load a model saved by :meth:`save_pretrained`. Only safetensors are read, never pickles."""
        directory = Path(directory)
        config_path, weights_path = directory / "config.json", directory / "model.safetensors"
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} not found: a tsmojo model directory holds config.json and model.safetensors"
                )
        model = cls(TSMojoConfig.load(config_path))
        model.load_state_dict(load_file(str(weights_path), device=str(device)))
        return model.to(device).eval()
