"""The pairwise aggregation y_i = sum_j f(theta_i, phi_j) g_j / C(x) of a non-local block.

Each of the four pairwise functions of Wang et al. (CVPR 2018) has two implementations with the
same signature and the same result:

* ``reference``: the plain O(N*M) form that builds the N x M affinity matrix, as the papers
  write it. Kept as the ground truth for tests and benchmarks.
* ``efficient``: never builds the affinity matrix.

  - embedded Gaussian / Gaussian: ``softmax(theta phi^T) g`` is attention with scale 1, run by
    the fused ``scaled_dot_product_attention`` (flash kernels on CPU and GPU keep O(N) memory).
  - dot product: ``(theta phi^T / M) g = theta (phi^T g) / M`` by associativity, O(N C^2).
  - concatenation: ``f_ij = ReLU(s_i + t_j)`` with ``s = a.theta``, ``t = b.phi``. For a fixed
    i the positive terms are exactly the j with ``t_j > -s_i``; sorting t once and taking
    prefix sums of ``g`` and ``t g`` gives ``sum_j f_ij g_j = s_i G(k_i) + TG(k_i)`` where k_i
    is found by binary search. O((N + M) log M) time, O((N + M) C) memory, exact.

Shapes everywhere: theta ``(B, N, Cq)`` (queries), phi ``(B, M, Cq)`` (keys), g ``(B, M, Cv)``
(values), output ``(B, N, Cv)``.
"""

import torch
import torch.nn.functional as F

__all__ = ["NONLOCAL_MODES", "NONLOCAL_IMPLS", "nonlocal_aggregate"]

#: Pairwise functions, spelled as in the config (``MODEL.WNLB.MODE``).
NONLOCAL_MODES = ("embedded", "gaussian", "dot", "concatenate")
#: Implementations, spelled as in the config (``MODEL.WNLB.IMPL``).
NONLOCAL_IMPLS = ("efficient", "reference")


def _softmax_reference(theta, phi, g):
    affinity = torch.bmm(theta, phi.transpose(1, 2))  # (B, N, M)
    return torch.bmm(affinity.softmax(dim=-1), g)


def _softmax_efficient(theta, phi, g):
    # The fused CPU/GPU kernels want (B, heads, L, E) contiguous inputs with equal query/key and
    # value widths; otherwise torch silently falls back to the O(N^2) math path. Zero-padding
    # the narrower side to the same width leaves the result unchanged: zero columns add nothing
    # to theta.phi, and zero value columns are sliced off again.
    cq, cv = theta.shape[-1], g.shape[-1]
    if cq < cv:
        theta = F.pad(theta, (0, cv - cq))
        phi = F.pad(phi, (0, cv - cq))
    elif cv < cq:
        g = F.pad(g, (0, cq - cv))
    q = theta.unsqueeze(1).contiguous()
    k = phi.unsqueeze(1).contiguous()
    v = g.unsqueeze(1).contiguous()
    out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
    return out.squeeze(1)[..., :cv]


def _dot_reference(theta, phi, g):
    affinity = torch.bmm(theta, phi.transpose(1, 2)) / phi.shape[1]  # C(x) = M
    return torch.bmm(affinity, g)


def _dot_efficient(theta, phi, g):
    # 1/M goes into the small (Cq, Cv) matrix: no extra (B, N, Cv) tensor.
    return torch.bmm(theta, torch.bmm(phi.transpose(1, 2), g) / phi.shape[1])


def _concat_scores(theta, phi, concat_weight):
    cq = theta.shape[-1]
    w = concat_weight.reshape(-1)
    if w.numel() != 2 * cq:
        raise ValueError(
            f"concat_weight must hold 2 * {cq} = {2 * cq} values (one per channel of "
            f"[theta, phi]), got shape {tuple(concat_weight.shape)}"
        )
    s = theta @ w[:cq]  # (B, N)
    t = phi @ w[cq:]  # (B, M)
    return s, t


def _concat_reference(theta, phi, g, concat_weight):
    s, t = _concat_scores(theta, phi, concat_weight)
    affinity = F.relu(s.unsqueeze(2) + t.unsqueeze(1)) / phi.shape[1]  # (B, N, M)
    return torch.bmm(affinity, g)


def _concat_efficient(theta, phi, g, concat_weight):
    s, t = _concat_scores(theta, phi, concat_weight)
    m, cv = g.shape[1], g.shape[2]
    t_desc, order = torch.sort(t, dim=1, descending=True)
    # C = M is applied to g once, before the prefix sums, instead of to the (B, N, Cv) result.
    g_desc = g.gather(1, order.unsqueeze(-1).expand(-1, -1, cv)) / m
    zero = g.new_zeros(g.shape[0], 1, cv)
    # prefix[k] = sum over the k largest t_j; the leading zero row covers k = 0.
    g_prefix = torch.cat([zero, g_desc.cumsum(dim=1)], dim=1)  # (B, M + 1, Cv)
    tg_prefix = torch.cat([zero, (t_desc.unsqueeze(-1) * g_desc).cumsum(dim=1)], dim=1)
    # k_i = #{j : t_j > -s_i}: searchsorted on the ascending keys counts t_j <= -s_i.
    t_asc = t_desc.flip(1).contiguous().detach()
    k = m - torch.searchsorted(t_asc, (-s).detach().contiguous(), right=True)  # (B, N)
    k = k.unsqueeze(-1).expand(-1, -1, cv)
    g_sum = g_prefix.gather(1, k)
    tg_sum = tg_prefix.gather(1, k)
    return torch.addcmul(tg_sum, s.unsqueeze(-1), g_sum)


def nonlocal_aggregate(theta, phi, g, *, mode, impl="efficient", concat_weight=None):
    """Compute ``y_i = sum_j f(theta_i, phi_j) g_j / C`` for one pairwise function.

    Args:
        theta (Tensor): queries, shape ``(B, N, Cq)``.
        phi (Tensor): keys, shape ``(B, M, Cq)``.
        g (Tensor): values, shape ``(B, M, Cv)``.
        mode (str): one of :data:`NONLOCAL_MODES`. "embedded" and "gaussian" normalise with a
            softmax over j (they differ only in how theta/phi are made, by the caller); "dot"
            and "concatenate" divide by C = M.
        impl (str): one of :data:`NONLOCAL_IMPLS`.
        concat_weight (Tensor): for "concatenate" only, the ``2 * Cq`` weights ``[a, b]`` of
            the projection ``f_ij = ReLU(a.theta_i + b.phi_j)``.

    Returns:
        Tensor: ``y``, shape ``(B, N, Cv)``.
    """
    if mode not in NONLOCAL_MODES:
        raise ValueError(f"Unknown non-local mode {mode!r}; expected one of {NONLOCAL_MODES}")
    if impl not in NONLOCAL_IMPLS:
        raise ValueError(f"Unknown non-local impl {impl!r}; expected one of {NONLOCAL_IMPLS}")
    efficient = impl == "efficient"
    if mode in ("embedded", "gaussian"):
        return (_softmax_efficient if efficient else _softmax_reference)(theta, phi, g)
    if mode == "dot":
        return (_dot_efficient if efficient else _dot_reference)(theta, phi, g)
    if concat_weight is None:
        raise ValueError("mode 'concatenate' needs concat_weight")
    return (_concat_efficient if efficient else _concat_reference)(theta, phi, g, concat_weight)
