"""Sequential reference for the diagonal selective state-space scan (Mamba-2 / SSD form).

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t (outer) B_t
    y_t = h_t @ C_t

Shapes: x (batch, T, heads, head_dim), dt (batch, T, heads), A (heads,),
B and C (batch, T, state). The state starts at zero.
"""

import torch


def ssd_scan_naive(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> torch.Tensor:
    """Run the scan one step at a time in float32; O(T) sequential steps, for testing only."""
    with torch.autocast(x.device.type, enabled=False):
        return _scan(x.float(), dt.float(), A.float(), B.float(), C.float()).to(x.dtype)


def _scan(x, dt, A, B, C):
    batch, length, heads, head_dim = x.shape
    state = x.new_zeros(batch, heads, head_dim, B.shape[-1], dtype=torch.float32)
    outputs = []
    for t in range(length):
        decay = torch.exp(dt[:, t].float() * A.float())  # (batch, heads)
        update = (dt[:, t, :, None].float() * x[:, t].float())[..., None] * B[:, t, None, None, :].float()
        state = decay[..., None, None] * state + update
        outputs.append(torch.einsum("bhpn,bn->bhp", state, C[:, t].float()))
    if not outputs:
        return x.new_zeros(x.shape)
    return torch.stack(outputs, dim=1).to(x.dtype)
