"""The covariate hint: each target's ridge regression on the known-future covariates of its group.

Attention can learn that a price follows residual load, but only from enough examples of that
relationship; a least-squares fit on the target's own history finds the linear part of it at
once, for every group, at the cost of a few small solves. The fitted values over the context show
the model how well the regression explained the past; over the horizon they are the regression's
forecast. The model embeds both and learns when to trust them.
"""

from __future__ import annotations

import torch

from tsmojo.layers import FUTURE_COVARIATE, TARGET, GroupLayout

MIN_FIT_STEPS = 16  # fewer usable steps than this leave the hint empty
RIDGE = 0.01  # penalty per fitted step on the covariate coefficients (inputs are roughly unit-scale)
LIMIT = 50.0  # fitted values are clipped to this magnitude (model space, where data lies within a few units)


def covariate_regression(
    values: torch.Tensor, context_steps: int, roles: torch.Tensor, layout: GroupLayout, window: int
) -> torch.Tensor:
    """Fitted values of every target row on its group's known-future covariates.

    The fit uses the last ``window`` context steps at which the target and all of its group's
    known-future covariates are observed, with an intercept and a ridge penalty on the slopes.

    values: (B, T) model-space values, the context in the first ``context_steps`` steps, then the
        horizon (NaN except the known-future covariates' values). roles: (B,) row roles.
    Returns (B, T): the regression's values wherever the covariates are known, NaN for rows that
    are not targets, targets without known-future covariates in their group, and failed fits.
    """
    out = torch.full_like(values, float("nan"))
    steps = torch.arange(values.shape[1], device=values.device)
    fit_step = (steps < context_steps) & (steps >= context_steps - window)
    for rows in layout.buckets:
        present = rows >= 0
        members = rows.clamp(min=0)
        row_values = values[members].double()  # (G, s, T)
        row_roles = roles[members]
        is_covariate = (row_roles == FUTURE_COVARIATE) & present
        is_target = (row_roles == TARGET) & present
        has_covariates = is_covariate.any(-1)  # (G,)
        if not bool((has_covariates[:, None] & is_target).any()):
            continue
        known = ~torch.isnan(row_values) | ~is_covariate[..., None]
        covariates_known = known.all(1)  # (G, T): every covariate of the group observed
        slopes = torch.where(is_covariate[..., None], torch.nan_to_num(row_values), 0.0)
        design = torch.cat([slopes.transpose(1, 2), torch.ones_like(slopes[:, :1]).transpose(1, 2)], -1)  # (G, T, s+1)
        target = torch.nan_to_num(row_values)
        weight = (~torch.isnan(row_values) & (covariates_known & fit_step)[:, None, :]).double()  # (G, s, T)
        count = weight.sum(-1)  # (G, s)
        gram = torch.einsum("gjt,gta,gtb->gjab", weight, design, design)
        penalty = torch.ones(design.shape[-1], dtype=gram.dtype, device=gram.device)
        penalty[-1] = 1e-6  # the intercept is free
        gram = gram + torch.diag_embed(RIDGE * count.clamp(min=1)[..., None] * penalty)
        moment = torch.einsum("gjt,gta,gjt->gja", weight, design, target)
        coefficients = torch.linalg.solve(gram, moment[..., None])[..., 0]  # (G, s, s+1)
        fitted = torch.einsum("gta,gja->gjt", design, coefficients).clamp(-LIMIT, LIMIT)
        usable = is_target & has_covariates[:, None] & (count >= MIN_FIT_STEPS)
        valid = usable[..., None] & covariates_known[:, None, :]
        fitted = torch.where(valid & torch.isfinite(fitted), fitted, torch.full_like(fitted, float("nan")))
        out[rows[present]] = fitted[present].to(values.dtype)
    return out
