"""The pairwise aggregation y_i = sum_j f(theta_i, phi_j) g_j / C(x) of a non-local block.

Each of the four pairwise functions of Wang et al. (CVPR 2018) has two implementations with the
same signature and the same result:

* ``reference``: the plain O(N*M) form that builds the N x M affinity matrix, as the papers
  write it. Kept as the ground truth for tests and benchmarks.
* ``efficient``: never builds the affinity matrix.

  - embedded Gaussian / Gaussian: ``softmax(theta phi^T) g`` is attention with scale 1, run
    over query tiles with BLAS matmuls in a custom autograd function whose backward recomputes
    each tile (any query and value widths, O(tile x M) working memory), over pairs of tiles
    when the keys are the queries (the Gaussian without sub-sampling: the score matrix is
    symmetric, so each score block serves two tiles), or by the fused
    ``scaled_dot_product_attention`` kernels where they apply and are faster
    (:func:`softmax_attention`).
  - dot product: ``(theta phi^T / M) g = theta (phi^T g) / M`` by associativity, O(N C^2).
  - concatenation: ``f_ij = ReLU(s_i + t_j)`` with ``s = a.theta``, ``t = b.phi``. For a fixed
    i the positive terms are exactly the j with ``t_j > -s_i``; sorting t once and taking
    prefix sums of ``g`` and ``t g`` gives ``sum_j f_ij g_j = s_i G(k_i) + TG(k_i)`` where k_i
    is found by binary search. O((N + M) log M) time, O((N + M) C) memory, exact
    (:func:`concat_aggregate`, which takes s and t directly).

Shapes everywhere: theta ``(B, N, Cq)`` (queries), phi ``(B, M, Cq)`` (keys), g ``(B, M, Cv)``
(values), output ``(B, N, Cv)``.
"""

import math
import warnings
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = [
    "NONLOCAL_MODES", "NONLOCAL_IMPLS", "SOFTMAX_KERNELS", "concat_aggregate", "export_aggregate", "is_exporting",
    "nonlocal_aggregate", "softmax_attention",
]

#: Pairwise functions, spelled as in the config (``MODEL.WNLB.MODE``).
NONLOCAL_MODES = ("embedded", "gaussian", "dot", "concatenate")
#: Implementations, spelled as in the config (``MODEL.WNLB.IMPL``).
NONLOCAL_IMPLS = ("efficient", "reference")


def is_exporting():
    """Whether this code is being traced, scripted or exported rather than run eagerly.

    True under ``torch.jit.trace`` / ``torch.jit.script``, ``torch.export`` (and so the dynamo
    ONNX exporter) and ``torch.onnx.export``. The efficient kernels are autograd Functions that
    branch in Python on sizes and free memory, fill preallocated buffers in place and keep a
    process-wide cache: a trace records one input's choices, and the TorchScript-based ONNX
    exporter drops the in-place updates of buffer views inside an inlined Function (the Gaussian
    block's symmetric kernel then exported ``0 / 0``: NaN for every input). While exporting, the
    block runs :func:`export_aggregate` instead.
    """
    if torch.jit.is_scripting():
        return True
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting())


def _softmax_reference(theta, phi, g):
    affinity = torch.bmm(theta, phi.transpose(1, 2))  # (B, N, M)
    return torch.bmm(affinity.softmax(dim=-1), g)


#: Bytes of one ``(B, tile, M)`` score matrix of the tiled softmax path. Backward keeps two
#: such buffers (probabilities and their gradient), forward one.
TILE_BYTES = 32 * 2**20
#: Bytes of probability tiles that forward may keep for backward instead of recomputing them
#: there. Maps up to res4 of an 800x1333 image (4,200 positions: 67 MiB of probabilities) are
#: kept whole, so backward does the reference's arithmetic, which beats the fused kernel's
#: recomputation there (docs/results.md, "Cost: one block"); larger ones keep their first tiles and
#: recompute the rest.
KEEP_BYTES = 80 * 2**20


def softmax_tile_rows(batch, keys, itemsize, budget=None):
    """Query rows per tile of the tiled softmax path: ``batch * rows * keys * itemsize <= budget``.

    Args:
        batch (int): B.
        keys (int): M, the number of keys.
        itemsize (int): bytes per element of the score matrix.
        budget (int): bytes of one ``(B, rows, M)`` matrix; default :data:`TILE_BYTES`.

    Returns:
        int: rows per tile, at least 1.
    """
    budget = TILE_BYTES if budget is None else budget
    return max(1, budget // max(1, batch * keys * itemsize))


def _compute_dtype(dtype):
    # Scores, exponentials and their sums in half precision would lose the exactness the
    # softmax needs; the fused kernels also accumulate them in float32.
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _empty_in_layout(t, zero=False):
    """A new tensor shaped like the ``(B, L, C)`` tensor ``t``, stored as ``(B, C, L)`` when ``t``
    is a transposed view of a feature map, so that its gradient reaches the map without a
    layout change."""
    b, length, c = t.shape
    if length > 1 and c > 1 and t.stride(1) == 1:
        out = t.new_empty(b, c, length).transpose(1, 2)
    else:
        out = t.new_empty(b, length, c)
    return out.zero_() if zero else out


class _TiledSoftmaxAttention(torch.autograd.Function):
    """``softmax(theta phi^T) g`` over query tiles with BLAS matmuls; backward recomputes tiles.

    Forward keeps, per query, the log-sum-exp of its scores, plus the probabilities of as many
    tiles as fit in ``keep_bytes``; backward recomputes the other tiles' probabilities from the
    log-sum-exp (FlashAttention's recomputation). No ``(B, N, M)`` tensor exists beyond these
    budgets: the scores and their gradient live in preallocated ``(B, tile, M)`` buffers
    reused by every tile (no allocation, hence no page faults, per tile). Any query width Cq
    and value width Cv, any floating dtype (half precision computes in float32), any device.

    Shapes: theta ``(B, N, Cq)``, phi ``(B, M, Cq)``, g ``(B, M, Cv)``; the output is
    ``(B, Cv, N)``, the layout of a ``(B, Cv, H, W)`` feature map, so the caller's reshape to
    a map is a view.
    """

    @staticmethod
    def forward(ctx, theta, phi, g, tile, keep_bytes):
        # Autocast would recast every matmul to half precision; this function picks its own.
        with torch.autocast(device_type=theta.device.type, enabled=False):
            return _TiledSoftmaxAttention._forward(ctx, theta, phi, g, tile, keep_bytes)

    @staticmethod
    def backward(ctx, grad_out):
        with torch.autocast(device_type=grad_out.device.type, enabled=False):
            return _TiledSoftmaxAttention._backward(ctx, grad_out)

    @staticmethod
    def _forward(ctx, theta, phi, g, tile, keep_bytes):
        ctx.dtypes = (theta.dtype, phi.dtype, g.dtype)
        cdt = _compute_dtype(torch.promote_types(theta.dtype, g.dtype))
        theta, phi, g = theta.to(cdt), phi.to(cdt), g.to(cdt)
        b, n, _ = theta.shape
        m, cv = g.shape[1], g.shape[2]
        out = g.new_empty(b, cv, n)
        lse = theta.new_empty(b, n, 1)
        buf = None
        kept, kept_bytes = [], 0
        phi_t, g_t = phi.transpose(1, 2), g.transpose(1, 2)  # views: BLAS reads them transposed
        for start in range(0, n, tile):
            stop = min(start + tile, n)
            nbytes = b * (stop - start) * m * theta.element_size()
            keep = kept_bytes + nbytes <= keep_bytes
            if keep:
                kept_bytes += nbytes
                scores = torch.bmm(theta[:, start:stop], phi_t)
            else:
                if buf is None:
                    buf = theta.new_empty(b * min(tile, n) * m)
                scores = torch.bmm(theta[:, start:stop], phi_t, out=buf[: b * (stop - start) * m].view(b, -1, m))
            peak = scores.amax(dim=-1, keepdim=True)  # (B, T, 1)
            scores.sub_(peak).exp_()
            total = scores.sum(dim=-1, keepdim=True)
            if keep:
                kept.append(scores.div_(total))
                # (Cv, M) @ (M, T): the tile lands in the (B, Cv, N) output directly.
                out[:, :, start:stop] = torch.bmm(g_t, scores.transpose(1, 2))
            else:
                out[:, :, start:stop] = torch.bmm(g_t, scores.transpose(1, 2)).div_(total.transpose(1, 2))
            lse[:, start:stop] = total.log_().add_(peak)
        ctx.tile = tile
        ctx.num_kept = len(kept)
        ctx.save_for_backward(theta, phi, g, out, lse, *kept)
        return out.to(ctx.dtypes[2])

    @staticmethod
    def _backward(ctx, grad_out):
        theta, phi, g, out, lse, *kept = ctx.saved_tensors
        tile = ctx.tile
        grad_out = grad_out.to(out.dtype)
        b, n, _ = theta.shape
        m = g.shape[1]
        need_theta, need_phi, need_g = ctx.needs_input_grad[:3]
        # D_i = sum_j P_ij dP_ij = dout_i . out_i: the softmax backward's row term, O(N Cv).
        neg_delta = (grad_out * out).sum(dim=1).neg_().unsqueeze(-1)  # (B, N, 1)
        neg_lse = lse.neg()
        grad_theta = _empty_in_layout(theta) if need_theta else None
        grad_phi = _empty_in_layout(phi, zero=True) if need_phi else None
        grad_g = _empty_in_layout(g, zero=True) if need_g else None
        rows = min(tile, n)
        p_buf = theta.new_empty(b * rows * m) if len(kept) * tile < n else None
        ds_buf = theta.new_empty(b * rows * m) if (need_theta or need_phi) else None
        phi_t, g_t = phi.transpose(1, 2), g.transpose(1, 2)
        for k, start in enumerate(range(0, n, tile)):
            stop = min(start + tile, n)
            size = b * (stop - start) * m
            theta_i = theta[:, start:stop]  # (B, T, Cq)
            dout_i = grad_out[:, :, start:stop].transpose(1, 2)  # (B, T, Cv)
            if k < len(kept):
                p = kept[k]
            else:  # P = exp(S - lse): one matmul with the shift as its bias, one exp
                p = torch.baddbmm(neg_lse[:, start:stop], theta_i, phi_t, out=p_buf[:size].view(b, -1, m)).exp_()
            if need_g:
                grad_g.baddbmm_(p.transpose(1, 2), dout_i)
            if not (need_theta or need_phi):
                continue
            # dS = P * (dP - D) with dP = dout g^T.
            ds = torch.baddbmm(neg_delta[:, start:stop], dout_i, g_t, out=ds_buf[:size].view(b, -1, m)).mul_(p)
            if need_theta:
                grad_theta[:, start:stop] = torch.bmm(ds, phi)
            if need_phi:
                grad_phi.baddbmm_(ds.transpose(1, 2), theta_i)
        grads = [grad_theta, grad_phi, grad_g]
        return tuple(None if t is None else t.to(d) for t, d in zip(grads, ctx.dtypes)) + (None, None)


#: Rows per tile of the symmetric kernel on the CPU: its buffers are three ``(B, T, T)``
#: matrices, 1 MiB each at T = 512 in float32, and its matmuls ``(T, C) @ (C, T)`` still run
#: at BLAS speed (256 and 1024 were slower at res3).
SYMMETRIC_TILE_ROWS = 512
#: The same on other devices: a GPU runs a 512 x 512 block in microseconds, so larger tiles keep
#: the number of kernel launches (about 15 per pair of tiles) from dominating; 3 x 16 MiB.
SYMMETRIC_TILE_ROWS_GPU = 2048


def _tile_bounds(n, tile):
    return [(start, min(start + tile, n)) for start in range(0, n, tile)]


class _SymmetricSoftmaxAttention(torch.autograd.Function):
    """``softmax(x x^T) g`` over pairs of tiles ``I <= J``, exploiting that ``S = x x^T`` is symmetric.

    The Gaussian block without sub-sampling uses x itself as queries and keys, so the score
    block ``S_IJ`` of tile rows I and tile columns J is the transpose of ``S_JI``: each pair of
    tiles computes it once and uses it for both. Forward is an online (flash-style) softmax:
    rows I take ``exp(S_IJ - m_I)`` against g_J and rows J take ``exp(S_IJ^T - m_J)`` against
    g_I, each rescaling its running sum and output when its running maximum m grows; only the
    log-sum-exp is kept. Backward recomputes ``P_IJ = exp(S_IJ - lse_I)`` and
    ``P_JI^T = exp(S_IJ - lse_J^T)`` from one score block and, since ``dx = (dS + dS^T) x``,
    forms ``E_IJ = dS_IJ + dS_JI^T`` once for ``dx_I += E_IJ x_J`` and ``dx_J += E_IJ^T x_I``.
    Per pair of positions this is 7 products of Cv channels where the tiled kernel does 11 and
    the reference 9 (scores cost Cq / Cv = 2 of them; the Gaussian has Cv = C / 2).

    Working memory beyond the O(N C) tensors is three ``(B, T, T)`` buffers, reused by every
    pair. Any widths, floating dtypes (half precision computes in float32) and devices.

    Shapes: x ``(B, N, C)``, g ``(B, N, Cv)``; the output is ``(B, Cv, N)``, a feature map's
    layout (as :class:`_TiledSoftmaxAttention`'s).
    """

    @staticmethod
    def forward(ctx, x, g, tile):
        with torch.autocast(device_type=x.device.type, enabled=False):
            return _SymmetricSoftmaxAttention._forward(ctx, x, g, tile)

    @staticmethod
    def backward(ctx, grad_out):
        with torch.autocast(device_type=grad_out.device.type, enabled=False):
            return _SymmetricSoftmaxAttention._backward(ctx, grad_out)

    @staticmethod
    def _accumulate(s, p, peak, total, acc, values_t):
        """One online-softmax step for the rows of ``s`` against the values of its columns.

        Args:
            s (Tensor): scores ``(B, R, K)`` (read only).
            p (Tensor): a ``(B, R, K)`` buffer for the probabilities (may be ``s`` itself).
            peak (Tensor): running row maxima ``(B, R, 1)``, updated in place.
            total (Tensor): running sums of ``exp(s - peak)``, ``(B, R, 1)``, in place.
            acc (Tensor): running unnormalised output ``(B, Cv, R)``, in place.
            values_t (Tensor): values of the columns, transposed: ``(B, Cv, K)``.
        """
        new_peak = torch.maximum(peak, s.amax(dim=-1, keepdim=True))
        scale = (peak - new_peak).exp_()  # 0 on the first visit (peak = -inf), else <= 1
        torch.sub(s, new_peak, out=p).exp_()
        total.mul_(scale).add_(p.sum(dim=-1, keepdim=True))
        peak.copy_(new_peak)
        acc.mul_(scale.transpose(1, 2)).baddbmm_(values_t, p.transpose(1, 2))

    @staticmethod
    def _forward(ctx, x, g, tile):
        ctx.dtypes = (x.dtype, g.dtype)
        cdt = _compute_dtype(torch.promote_types(x.dtype, g.dtype))
        x, g = x.to(cdt), g.to(cdt)
        b, n, _ = x.shape
        cv = g.shape[2]
        acc = g.new_zeros(b, cv, n)  # (B, Cv, N): unnormalised, then the output
        peak = x.new_full((b, n, 1), float("-inf"))
        total = x.new_zeros(b, n, 1)
        rows = min(tile, n)
        s_buf, p_buf = x.new_empty(b * rows * rows), x.new_empty(b * rows * rows)
        x_t, g_t = x.transpose(1, 2), g.transpose(1, 2)  # (B, C, N), (B, Cv, N) views
        bounds = _tile_bounds(n, tile)
        for k, (i0, i1) in enumerate(bounds):
            for j0, j1 in bounds[k:]:
                shape = (b, i1 - i0, j1 - j0)
                s = torch.bmm(x[:, i0:i1], x_t[:, :, j0:j1], out=s_buf[: math.prod(shape)].view(shape))
                p = p_buf[: s.numel()].view(shape)
                _SymmetricSoftmaxAttention._accumulate(
                    s, p, peak[:, i0:i1], total[:, i0:i1], acc[:, :, i0:i1], g_t[:, :, j0:j1])
                if j0 != i0:  # the same block seen from rows J: S_JI = S_IJ^T
                    st, pt = s.transpose(1, 2), p.transpose(1, 2)
                    _SymmetricSoftmaxAttention._accumulate(
                        st, pt, peak[:, j0:j1], total[:, j0:j1], acc[:, :, j0:j1], g_t[:, :, i0:i1])
        acc.div_(total.transpose(1, 2))
        lse = total.log_().add_(peak)  # (B, N, 1)
        ctx.tile = tile
        ctx.save_for_backward(x, g, acc, lse)
        return acc.to(ctx.dtypes[1])

    @staticmethod
    def _backward(ctx, grad_out):
        x, g, out, lse = ctx.saved_tensors
        tile = ctx.tile
        grad_out = grad_out.to(out.dtype)  # (B, Cv, N)
        b, n, _ = x.shape
        need_x, need_g = ctx.needs_input_grad[:2]
        # D_i = sum_j P_ij dP_ij = dout_i . out_i: the softmax backward's row term, O(N Cv).
        neg_delta = (grad_out * out).sum(dim=1).neg_().unsqueeze(-1)  # (B, N, 1)
        neg_lse = lse.neg()
        neg_delta_t, neg_lse_t = neg_delta.transpose(1, 2), neg_lse.transpose(1, 2)  # (B, 1, N)
        # Gradients kept transposed, (B, C, N) and (B, Cv, N), where x and g are views of maps.
        grad_x = _empty_in_layout(x, zero=True) if need_x else None
        grad_g = _empty_in_layout(g, zero=True) if need_g else None
        grad_x_t = grad_x.transpose(1, 2) if need_x else None
        grad_g_t = grad_g.transpose(1, 2) if need_g else None
        rows = min(tile, n)
        bufs = [x.new_empty(b * rows * rows) for _ in range(3 if need_x else 2)]
        x_t, g_t = x.transpose(1, 2), g.transpose(1, 2)
        bounds = _tile_bounds(n, tile)
        for k, (i0, i1) in enumerate(bounds):
            for j0, j1 in bounds[k:]:
                shape = (b, i1 - i0, j1 - j0)
                size = math.prod(shape)
                buf_s, buf_p = bufs[0][:size].view(shape), bufs[1][:size].view(shape)
                diagonal = i0 == j0
                x_ti, x_tj = x_t[:, :, i0:i1], x_t[:, :, j0:j1]  # (B, C, T)
                dout_ti, dout_tj = grad_out[:, :, i0:i1], grad_out[:, :, j0:j1]  # (B, Cv, T)
                if diagonal:  # P_II = exp(S_II - lse_I): one matmul with the shift as its bias
                    p = torch.baddbmm(neg_lse[:, i0:i1], x[:, i0:i1], x_tj, out=buf_p).exp_()
                else:  # one score block for both P_IJ and P_JI^T = exp(S_IJ - lse_J^T)
                    s = torch.bmm(x[:, i0:i1], x_tj, out=buf_s)
                    p = torch.add(s, neg_lse[:, i0:i1], out=buf_p).exp_()
                    q = s.add_(neg_lse_t[:, :, j0:j1]).exp_()
                if need_g:
                    grad_g_t[:, :, j0:j1].baddbmm_(dout_ti, p)  # dg_J += P_IJ^T dout_I
                    if not diagonal:
                        grad_g_t[:, :, i0:i1].baddbmm_(dout_tj, q.transpose(1, 2))  # dg_I += P_JI^T dout_J
                if not need_x:
                    continue
                # dS_IJ = P_IJ * (dout_I g_J^T - D_I)
                e = torch.baddbmm(neg_delta[:, i0:i1], dout_ti.transpose(1, 2), g_t[:, :, j0:j1],
                                  out=bufs[2][:size].view(shape)).mul_(p)
                if diagonal:  # E_II = dS_II + dS_II^T (p's buffer is free now)
                    e = torch.add(e, e.transpose(1, 2), out=buf_p)
                else:  # E_IJ = dS_IJ + dS_JI^T, dS_JI^T = P_JI^T * (g_I dout_J^T - D_J^T)
                    dq = torch.baddbmm(neg_delta_t[:, :, j0:j1], g[:, i0:i1], dout_tj, out=buf_p)
                    e.addcmul_(q, dq)
                    grad_x_t[:, :, j0:j1].baddbmm_(x_ti, e)  # dx_J += E_IJ^T x_I
                grad_x_t[:, :, i0:i1].baddbmm_(x_tj, e.transpose(1, 2))  # dx_I += E_IJ x_J
        grads = [grad_x, grad_g]
        return tuple(None if t is None else t.to(d) for t, d in zip(grads, ctx.dtypes)) + (None,)


#: Choices of ``softmax_kernel``: "auto" picks per call (see :func:`softmax_attention`).
SOFTMAX_KERNELS = ("auto", "fused", "tiled", "symmetric")

# (device type, dtype, Cq, Cv, needs grad) for which the fused kernels refused: not retried.
_FUSED_UNAVAILABLE = set()


def _fused_attention(theta, phi, g):
    """The fused SDPA kernels (never the O(N^2) math fallback), or None where none applies."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if theta.shape[-1] != g.shape[-1]:
        return None  # every fused kernel wants equal widths; padding would double the work
    key = (theta.device.type, theta.dtype, theta.shape[-1], g.shape[-1], torch.is_grad_enabled())
    if key in _FUSED_UNAVAILABLE:
        return None
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    if hasattr(SDPBackend, "CUDNN_ATTENTION") and theta.device.type == "cuda":
        backends.append(SDPBackend.CUDNN_ATTENTION)
    # (B, heads = 1, L, E) contiguous, as the kernels want.
    q, k, v = (t.unsqueeze(1).contiguous() for t in (theta, phi, g))
    try:
        with sdpa_kernel(backends), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "kernel not used because ..." is expected here
            out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
    except torch.OutOfMemoryError:
        raise  # not a refusal: the tiled kernel would not fit either
    except RuntimeError:
        _FUSED_UNAVAILABLE.add(key)
        return None
    return out.squeeze(1)


def _check_tile_rows(tile_rows):
    if not isinstance(tile_rows, int) or tile_rows < 1:
        raise ValueError(f"tile_rows must be a positive int, got {tile_rows!r}")
    return tile_rows


def softmax_attention(theta, phi, g, *, kernel="auto", tile_rows=None, keep_bytes=None):
    """Exact ``softmax(theta phi^T) g`` in O(N + M) memory, for any query and value widths.

    Three kernels:

    * "symmetric": :class:`_SymmetricSoftmaxAttention`, for keys that are the queries
      (``phi is theta``: the Gaussian block without sub-sampling); it computes each score block
      once for two tiles of rows, over pairs of tiles of ``tile_rows`` rows (default
      :data:`SYMMETRIC_TILE_ROWS`, :data:`SYMMETRIC_TILE_ROWS_GPU` off the CPU). Any widths,
      dtypes and devices.
    * "fused": torch's ``scaled_dot_product_attention`` restricted to its flash / memory-
      efficient kernels. Needs ``Cq == Cv`` and a dtype and device they support.
    * "tiled": :class:`_TiledSoftmaxAttention` (BLAS matmuls over query tiles of
      ``tile_rows`` rows, default :func:`softmax_tile_rows`), any widths, dtypes and devices.

    "auto" uses "symmetric" when ``phi is theta`` (less arithmetic than the reference, measured
    faster at every stage), otherwise "tiled" when the widths differ (the fused kernels would
    need zero-padding, i.e. up to twice the work) or when all probabilities fit in
    ``keep_bytes`` (then "tiled" does exactly the reference's arithmetic, without
    recomputation), and "fused" otherwise, which was measured faster there (docs/blocks.md, "How the
    efficient blocks work"). "symmetric" falls back to "tiled" for distinct keys, "fused" to
    "tiled" where the fused kernels refuse (dtype, device, width).

    Args:
        theta (Tensor): queries, ``(B, N, Cq)``.
        phi (Tensor): keys, ``(B, M, Cq)``; ``theta`` itself for the symmetric kernel.
        g (Tensor): values, ``(B, M, Cv)``.
        kernel (str): one of :data:`SOFTMAX_KERNELS`.
        tile_rows (int): query rows per tile of the tiled and symmetric kernels.
        keep_bytes (int): bytes of probability tiles the tiled kernel keeps for backward;
            default :data:`KEEP_BYTES`.

    Returns:
        Tensor: ``(B, N, Cv)``; from the tiled and symmetric kernels a transposed view of a
        contiguous ``(B, Cv, N)`` tensor (a feature map's layout).
    """
    if kernel not in SOFTMAX_KERNELS:
        raise ValueError(f"Unknown softmax kernel {kernel!r}; expected one of {SOFTMAX_KERNELS}")
    if is_exporting():  # the kernels below are autograd Functions: see is_exporting
        return _softmax_reference(theta, phi, g)
    if kernel in ("auto", "symmetric") and phi is theta:
        if tile_rows is None:
            tile_rows = SYMMETRIC_TILE_ROWS if theta.device.type == "cpu" else SYMMETRIC_TILE_ROWS_GPU
        tile = _check_tile_rows(tile_rows)
        return _SymmetricSoftmaxAttention.apply(theta, g, tile).transpose(1, 2)
    keep_bytes = KEEP_BYTES if keep_bytes is None else keep_bytes
    b, n, m = theta.shape[0], theta.shape[1], phi.shape[1]
    itemsize = torch.empty((), dtype=_compute_dtype(theta.dtype)).element_size()
    kept_whole = b * n * m * itemsize <= keep_bytes
    if kernel == "fused" or (kernel == "auto" and not kept_whole):
        out = _fused_attention(theta, phi, g)
        if out is not None:
            return out
    tile = _check_tile_rows(softmax_tile_rows(b, m, itemsize) if tile_rows is None else tile_rows)
    return _TiledSoftmaxAttention.apply(theta, phi, g, tile, keep_bytes).transpose(1, 2)


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


def concat_aggregate(s, t, g):
    """``y_i = sum_j ReLU(s_i + t_j) g_j / M`` without the N x M matrix, exactly.

    The concatenation's pairwise function needs theta and phi only through their projections
    ``s = a.theta`` and ``t = b.phi``, so a caller that can make s and t directly (the block
    folds ``a`` into theta's conv weight) passes them here. For a fixed i the positive terms are
    the j with ``t_j > -s_i``: with t sorted once, prefix sums of g and t g and a binary search
    give the sum in O((N + M) log M) time and O((N + M) Cv) memory.

    Args:
        s (Tensor): query scores, shape ``(B, N)``.
        t (Tensor): key scores, shape ``(B, M)``.
        g (Tensor): values, shape ``(B, M, Cv)``.

    Returns:
        Tensor: ``y``, shape ``(B, N, Cv)``.
    """
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


def _concat_efficient(theta, phi, g, concat_weight):
    s, t = _concat_scores(theta, phi, concat_weight)
    return concat_aggregate(s, t, g)


def export_aggregate(theta, phi, g, mode: str, concat_weight: Optional[torch.Tensor]):
    """``y`` of :func:`nonlocal_aggregate` as plain tensor operations that trace, script and export.

    No autograd Function, no branch on tensor values, sizes or memory, no cache: the reference
    formulas (the N x M matrix; the dot product's O(N C^2) form), with torch's softmax, which subtracts each row's maximum
    before ``exp`` as the efficient kernels do (an exported ``exp`` without it overflows). The
    concatenation's sort-and-search kernel is replaced by its ``ReLU(s_i + t_j)`` matrix.

    Args:
        theta (Tensor): queries ``(B, N, Cq)``.
        phi (Tensor): keys ``(B, M, Cq)``.
        g (Tensor): values ``(B, M, Cv)``.
        mode (str): one of :data:`NONLOCAL_MODES`.
        concat_weight (Tensor or None): ``[a, b]`` of "concatenate" (``2 * Cq`` values).

    Returns:
        Tensor: ``y``, ``(B, N, Cv)``.
    """
    if mode == "dot":
        return _dot_efficient(theta, phi, g)  # plain matmuls already: the eager arithmetic
    if mode == "concatenate":
        if concat_weight is None:
            raise ValueError("mode 'concatenate' needs concat_weight")
        # (Cq, 2) matrix products, not matrix-vector ones: onnxruntime 1.32's graph optimisations
        # fold the transposed view theta into a MatMul with a 1-D operand wrongly (s off by 5).
        ab = concat_weight.reshape(2, -1).t()  # columns a, b
        s = torch.bmm(theta, ab[:, :1].expand(theta.shape[0], -1, -1)).squeeze(2)  # (B, N)
        t = torch.bmm(phi, ab[:, 1:].expand(phi.shape[0], -1, -1)).squeeze(2)  # (B, M)
        affinity = F.relu(s.unsqueeze(2) + t.unsqueeze(1)) / phi.shape[1]
        return torch.bmm(affinity, g)
    return torch.bmm(torch.softmax(torch.bmm(theta, phi.transpose(1, 2)), dim=-1), g)


def nonlocal_aggregate(theta, phi, g, *, mode, impl="efficient", concat_weight=None, softmax_kernel="auto"):
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
        softmax_kernel (str): for the efficient "embedded" and "gaussian", one of
            :data:`SOFTMAX_KERNELS` (see :func:`softmax_attention`).

    Returns:
        Tensor: ``y``, shape ``(B, N, Cv)``.
    """
    if mode not in NONLOCAL_MODES:
        raise ValueError(f"Unknown non-local mode {mode!r}; expected one of {NONLOCAL_MODES}")
    if impl not in NONLOCAL_IMPLS:
        raise ValueError(f"Unknown non-local impl {impl!r}; expected one of {NONLOCAL_IMPLS}")
    if is_exporting():
        return export_aggregate(theta, phi, g, mode, concat_weight)
    efficient = impl == "efficient"
    if mode in ("embedded", "gaussian"):
        if efficient:
            return softmax_attention(theta, phi, g, kernel=softmax_kernel)
        return _softmax_reference(theta, phi, g)
    if mode == "dot":
        return (_dot_efficient if efficient else _dot_reference)(theta, phi, g)
    if concat_weight is None:
        raise ValueError("mode 'concatenate' needs concat_weight")
    return (_concat_efficient if efficient else _concat_reference)(theta, phi, g, concat_weight)
