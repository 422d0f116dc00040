"""The (weighted) non-local block: a non-local means operation over a feature map."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.layers import Conv2d, FrozenBatchNorm2d, get_norm

from .nonlocal_ops import (
    NONLOCAL_IMPLS, NONLOCAL_MODES, SOFTMAX_KERNELS, concat_aggregate, export_aggregate, is_exporting, nonlocal_aggregate,
)

__all__ = ["NonLocalBlock2d", "NONLOCAL_FUSIONS", "NONLOCAL_NORMS", "NONLOCAL_ZERO_INITS"]

#: Fusions, spelled as in the config (``MODEL.WNLB.FUSION``).
NONLOCAL_FUSIONS = ("weighted", "residual")
#: Norms of W_z, spelled as in the config (``MODEL.WNLB.NORM``); "none" means no norm.
NONLOCAL_NORMS = ("BN", "SyncBN", "GN", "FrozenBN", "none")
#: What of W_z starts at zero, spelled as in the config (``MODEL.WNLB.ZERO_INIT``): "norm" (its
#: norm's affine weight and bias; the conv is He-initialised, so the path can learn) or
#: "conv_and_norm" (the conv too, as the authors' released wnlb.py does: then no gradient ever
#: reaches the conv, the norm's weight, theta, phi or g, and only the norm's bias can move).
NONLOCAL_ZERO_INITS = ("norm", "conv_and_norm")


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"Invalid {name} {value!r}; expected one of {tuple(allowed)}")


class _WeightedFusion(torch.autograd.Function):
    """``z = w * wy + (1 - w) * x`` without full-size temporaries in forward or backward.

    Written out by autograd, the formula keeps two extra feature-map-sized tensors alive in
    forward (``w * wy`` and ``(1 - w) * x``) and ``torch.lerp``'s backward makes its own; here
    the only new tensors are ``z`` and the two input gradients, and ``dL/dw`` is two dot
    products. ``lerp`` returns exactly ``x`` at ``w = 0``.
    """

    @staticmethod
    def forward(ctx, x, wy, w):
        ctx.save_for_backward(x, wy, w)
        return torch.lerp(x, wy, w.to(x.dtype))

    @staticmethod
    def backward(ctx, grad):
        x, wy, w = ctx.saved_tensors
        grad_x = grad_wy = grad_w = None
        wv = w.to(grad.dtype)
        if ctx.needs_input_grad[0]:
            grad_x = grad * (1 - wv)
        if ctx.needs_input_grad[1]:
            grad_wy = grad * wv
        if ctx.needs_input_grad[2]:
            flat = grad.reshape(-1)
            grad_w = (torch.dot(flat, wy.reshape(-1)) - torch.dot(flat, x.reshape(-1))).to(w.dtype)
        return grad_x, grad_wy, grad_w


def weighted_fusion(x, wy, w):
    """``w * wy + (1 - w) * x`` for feature maps ``x``, ``wy`` of equal shape and a scalar ``w``.

    Under autocast ``wy`` (a conv's output) can be half precision while ``x`` is not: both are
    computed in their promoted dtype, as ``x + wy`` of the residual fusion is.
    """
    dtype = torch.promote_types(x.dtype, wy.dtype)
    if is_exporting():  # an autograd Function does not trace, script or export; lerp does
        return torch.lerp(x.to(dtype), wy.to(dtype), w.to(dtype))
    return _WeightedFusion.apply(x.to(dtype), wy.to(dtype), w)


class NonLocalBlock2d(nn.Module):
    """Weighted non-local block (wNLB) of Lin et al. (ICASSP 2025), or the original NLB.

    With ``x`` the input feature map and ``y_i = sum_j f(x_i, x_j) g(x_j) / C(x)``:

    * ``fusion="weighted"``: ``z = w * W_z(y) + (1 - w) * x`` with a scalar weight ``w``;
    * ``fusion="residual"``: ``z = x + W_z(y)`` (Wang et al., CVPR 2018).

    ``W_z`` is a 1x1 conv followed by an optional norm. At initialisation the block is exactly
    the identity (with ``weight_init=0`` for the weighted fusion): the norm's affine weight and
    bias are zeroed, or, when the norm has no trainable affine part ("FrozenBN", "none"), the
    conv itself is zeroed. Zeroing only one of the two keeps gradients flowing to the other.
    ``zero_init="conv_and_norm"`` zeroes both, as the authors' released block does: the output
    is the same at initialisation, but W_z(y) then stays a per-channel constant (the norm's bias)
    for ever, since every gradient of the path's other parameters is a product with a zero.

    Args:
        in_channels (int): channels C of the input and output.
        inter_channels (int): channels of theta, phi and g; default ``in_channels // 2``.
        mode (str): pairwise function, one of "embedded", "gaussian", "dot", "concatenate".
        fusion (str): "weighted" or "residual".
        weight_init (float): initial w of the weighted fusion.
        learnable_weight (bool): learn w (a parameter) or keep it fixed (a buffer).
        norm (str): norm of W_z: "BN", "SyncBN", "GN", "FrozenBN" or "none".
        impl (str): "efficient" (no N x N matrix) or "reference" (plain O(N^2)).
        sub_sample (bool): max-pool phi and g by 2 (4x fewer pairs; changes the result).
        zero_init (str): "norm" (default) or "conv_and_norm" (:data:`NONLOCAL_ZERO_INITS`).
        softmax_kernel (str): for the efficient "embedded" and "gaussian": "auto" (default),
            "fused", "tiled" or "symmetric" (see
            :func:`wnlb_d2.layers.nonlocal_ops.softmax_attention`; "auto" takes "symmetric" for
            the Gaussian without sub-sampling, whose keys are its queries).

    Shapes: input and output ``(B, C, H, W)``.
    """

    def __init__(
        self,
        in_channels,
        *,
        inter_channels=None,
        mode="embedded",
        fusion="weighted",
        weight_init=0.0,
        learnable_weight=True,
        norm="BN",
        impl="efficient",
        sub_sample=False,
        softmax_kernel="auto",
        zero_init="norm",
    ):
        super().__init__()
        _check_choice("mode", mode, NONLOCAL_MODES)
        _check_choice("fusion", fusion, NONLOCAL_FUSIONS)
        _check_choice("norm", norm, NONLOCAL_NORMS)
        _check_choice("impl", impl, NONLOCAL_IMPLS)
        _check_choice("softmax_kernel", softmax_kernel, SOFTMAX_KERNELS)
        _check_choice("zero_init", zero_init, NONLOCAL_ZERO_INITS)
        if not isinstance(in_channels, int) or in_channels <= 0:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if inter_channels is None:
            inter_channels = max(1, in_channels // 2)
        if not isinstance(inter_channels, int) or inter_channels <= 0:
            raise ValueError(f"inter_channels must be a positive int, got {inter_channels!r}")
        self.in_channels = in_channels
        self.inter_channels = inter_channels
        self.mode = mode
        self.fusion = fusion
        self.impl = impl
        self.sub_sample = bool(sub_sample)
        self.softmax_kernel = softmax_kernel
        self.zero_init = zero_init

        self.g = Conv2d(in_channels, inter_channels, kernel_size=1)
        if mode != "gaussian":  # the Gaussian uses x itself, no embedding
            self.theta = Conv2d(in_channels, inter_channels, kernel_size=1)
            self.phi = Conv2d(in_channels, inter_channels, kernel_size=1)
        if mode == "concatenate":
            # f_ij = ReLU(w^T [theta_i, phi_j]): a 1x1 conv from 2 * inter channels to 1.
            self.concat_project = nn.Conv2d(2 * inter_channels, 1, kernel_size=1, bias=False)
        w_norm = get_norm("" if norm == "none" else norm, in_channels)
        self.w_z = Conv2d(inter_channels, in_channels, kernel_size=1, bias=w_norm is None, norm=w_norm)

        weight = torch.tensor(float(weight_init))
        if fusion == "weighted" and learnable_weight:
            self.fusion_weight = nn.Parameter(weight)
        else:
            # Kept in the state dict so a checkpoint records the w that was used.
            self.register_buffer("fusion_weight", weight)
        self._init_weights()

    def _init_weights(self):
        for conv in [self.g, getattr(self, "theta", None), getattr(self, "phi", None)]:
            if conv is not None:
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(conv.bias)
        if hasattr(self, "concat_project"):
            nn.init.normal_(self.concat_project.weight, std=(2 * self.inter_channels) ** -0.5)
        norm = self.w_z.norm
        if norm is not None and not isinstance(norm, FrozenBatchNorm2d):
            if self.zero_init == "conv_and_norm":
                nn.init.zeros_(self.w_z.weight)
            else:
                nn.init.kaiming_normal_(self.w_z.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(norm.weight)
            nn.init.zeros_(norm.bias)
        else:
            nn.init.zeros_(self.w_z.weight)
            if self.w_z.bias is not None:
                nn.init.zeros_(self.w_z.bias)

    def extra_repr(self):
        return (
            f"mode={self.mode}, fusion={self.fusion}, impl={self.impl}, "
            f"sub_sample={self.sub_sample}, inter_channels={self.inter_channels}, zero_init={self.zero_init}"
        )

    def _pool(self, t):
        return F.max_pool2d(t, kernel_size=2) if self.sub_sample else t

    @staticmethod
    def _flatten(t):
        # (B, C, H, W) -> (B, H*W, C)
        return t.flatten(2).transpose(1, 2)

    @staticmethod
    def _stack_convs(x, channels):
        """Whether to run the block's 1x1 convs on ``x`` as one conv with ``channels`` stacked outputs.

        Stacking copies the weights into one ``(channels, C)`` matrix and builds its gradient
        in one piece (2 x channels x C elements), and saves the ``(B, C, H, W)`` input
        gradients that separate convs add up. Small maps with many channels (res5 of an
        800x1333 image: 3 Ci = 3072 > B H W = 1050) pay more for the weights than they save.
        """
        return channels <= x.shape[0] * x.shape[2] * x.shape[3]

    def _run_convs(self, x, weights, biases):
        """``x`` through 1x1 convs with weights ``(k_i, C)`` and biases ``(k_i,)``: one output per conv.

        Stacked into one conv where :meth:`_stack_convs` says so; the outputs are then views
        of its result, made by ``split``, whose backward concatenates their gradients in one copy.
        """
        if not self._stack_convs(x, sum(w.shape[0] for w in weights)):
            return [F.conv2d(x, w[..., None, None], b) for w, b in zip(weights, biases)]
        weight = torch.cat(weights)[..., None, None]
        return F.conv2d(x, weight, torch.cat(biases)).split([w.shape[0] for w in weights], dim=1)

    @staticmethod
    def _conv_params(conv):
        return conv.weight.flatten(1), conv.bias  # (Ci, C), (Ci,)

    def _concat_embeddings(self, x):
        """s ``(B, N)``, t ``(B, M)`` and g ``(B, M, Ci)`` of the concatenation ``f_ij = ReLU(s_i + t_j)``.

        theta enters f only through ``s_i = a . theta_i = (a^T W_theta) x_i + a . beta_theta``,
        so the efficient block folds ``a`` into theta's weight: one output channel instead of
        Ci, for the conv and for both of its gradients. phi is folded the same way, except with
        sub-sampling, where the max-pool comes between phi and its projection.
        """
        a, b = self.concat_project.weight.reshape(2, self.inter_channels)

        def folded(vec, conv):
            weight, bias = self._conv_params(conv)
            return (vec @ weight).unsqueeze(0), (vec @ bias).unsqueeze(0)  # (1, C), (1,)

        parts = [folded(a, self.theta), self._conv_params(self.phi) if self.sub_sample else folded(b, self.phi),
                 self._conv_params(self.g)]
        s, keys, g = self._run_convs(x, *zip(*parts))
        if self.sub_sample:
            t = self._flatten(self._pool(keys)) @ b
        else:
            t = keys.flatten(1)
        return s.flatten(1), t, self._flatten(self._pool(g))

    def _embeddings(self, x):
        """theta ``(B, N, Cq)``, phi ``(B, M, Cq)`` and g ``(B, M, Cv)`` of the map ``x``.

        The efficient path runs the 1x1 convs theta, phi and g as one conv with their weights
        stacked (one pass over x forward, one gradient for x backward instead of three summed),
        except on maps too small for it (:meth:`_stack_convs`). The results stay in the conv's
        (B, C, N) layout:
        the returned (B, N, C) tensors are transposed views, which the matmuls read directly
        and whose gradients come back in x's own layout.
        """
        if self.impl == "reference":
            g = self._flatten(self._pool(self.g(x)))
            if self.mode == "gaussian":
                return self._flatten(x), self._flatten(self._pool(x)), g
            return self._flatten(self.theta(x)), self._flatten(self._pool(self.phi(x))), g
        if self.mode == "gaussian":
            g = self._flatten(self._pool(self.g(x)))
            theta = self._flatten(x)
            # The same tensor as keys, not a copy: softmax_attention then uses the symmetric kernel.
            return theta, (self._flatten(self._pool(x)) if self.sub_sample else theta), g
        theta, phi, g = self._run_convs(x, *zip(*map(self._conv_params, (self.theta, self.phi, self.g))))
        phi, g = self._pool(phi), self._pool(g)  # max-pooling is per channel: pooling them apart is the same
        return self._flatten(theta), self._flatten(phi), self._flatten(g)

    def forward(self, x):
        """
        Args:
            x (Tensor): feature map, shape ``(B, C, H, W)`` with ``C == in_channels``.

        Returns:
            Tensor: ``z``, shape ``(B, C, H, W)``.
        """
        if torch.jit.is_scripting():  # resolved while compiling: the eager path is never compiled
            return self._forward_export(x)
        else:
            return self._forward_eager(x)

    @torch.jit.unused
    def _forward_eager(self, x):
        """:meth:`forward` outside TorchScript: the export path while traced or exported, else the kernels."""
        if is_exporting():
            return self._forward_export(x)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"NonLocalBlock2d expects a feature map of shape (B, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        b, _, h, w = x.shape
        if self.mode == "concatenate" and self.impl == "efficient":
            y = concat_aggregate(*self._concat_embeddings(x))
        else:
            theta, phi, g = self._embeddings(x)  # (B, N, Cq), (B, M, Cq), (B, M, Ci); Cq = C for gaussian
            concat_weight = self.concat_project.weight if self.mode == "concatenate" else None
            y = nonlocal_aggregate(theta, phi, g, mode=self.mode, impl=self.impl, concat_weight=concat_weight,
                                   softmax_kernel=self.softmax_kernel)
        y = y.transpose(1, 2).reshape(b, self.inter_channels, h, w)
        wy = self.w_z(y)
        if self.fusion == "residual":
            return x + wy
        return weighted_fusion(x, wy, self.fusion_weight)


    def _forward_export(self, x):
        """:meth:`forward` as plain tensor operations, for tracing, scripting and export.

        The same ``z`` as the efficient and reference paths (up to float rounding): separate
        1x1 convs, :func:`~wnlb_d2.layers.nonlocal_ops.export_aggregate` and ``torch.lerp``. No
        choice here depends on the input's size or values, so a trace made at one size is
        exact at every other.
        """
        g = self._flatten(self._pool(self.g(x)))
        # hasattr, not the mode: TorchScript compiles only the branch for the submodules present.
        if hasattr(self, "theta"):
            theta, phi = self._flatten(self.theta(x)), self._flatten(self._pool(self.phi(x)))
        else:  # the Gaussian: x itself
            theta, phi = self._flatten(x), self._flatten(self._pool(x))
        concat_weight: Optional[torch.Tensor] = None
        if hasattr(self, "concat_project"):
            concat_weight = self.concat_project.weight
        y = export_aggregate(theta, phi, g, self.mode, concat_weight)
        y = y.transpose(1, 2).reshape(x.shape[0], self.inter_channels, x.shape[2], x.shape[3])
        wy = self.w_z(y)
        if self.fusion == "residual":
            return x + wy
        dtype = torch.promote_types(x.dtype, wy.dtype)
        return torch.lerp(x.to(dtype), wy.to(dtype), self.fusion_weight.to(dtype))
