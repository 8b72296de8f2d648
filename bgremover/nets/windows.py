"""Window attention, the part of Swin that is about windows: cutting a (padded, shifted) token map
into windows and back (`WindowLayout`, cached per shape) and attention inside each window with a
learned relative position bias (`WindowAttention`). `swin.py` builds the backbone from them.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

# Logit added to attention between tokens that came from different image regions
# after the cyclic shift; the checkpoints were trained with this finite value.
_CROSS_REGION_LOGIT = -100.0


def _to_windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, size * size, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // size, size, w // size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, size * size, c)


def _relative_position_index(size: int) -> torch.Tensor:
    """For each pair of tokens in a window, the row of the bias table holding their offset."""
    coords = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")).flatten(1)
    offsets = (coords[:, :, None] - coords[:, None, :]) + (size - 1)
    return offsets[0] * (2 * size - 1) + offsets[1]


def _shifted_window_mask(hp: int, wp: int, size: int, shift: int, device: torch.device) -> torch.Tensor:
    """Additive mask (windows, N, N) that keeps attention inside each pre-shift region."""
    region = torch.zeros(1, hp, wp, 1, device=device)
    bounds = (slice(0, -size), slice(-size, -shift), slice(-shift, None))
    label = 0
    for rows in bounds:
        for cols in bounds:
            region[:, rows, cols, :] = label
            label += 1
    labels = _to_windows(region, size).squeeze(-1)
    different = labels.unsqueeze(1) != labels.unsqueeze(2)
    return torch.zeros(different.shape, device=device).masked_fill(different, _CROSS_REGION_LOGIT)


# After the cyclic shift, a window mixes pre-shift regions by where it lies: nowhere
# (kind 0: off the last row and column), across columns (1: last column), across rows
# (2: last row) or both (3: the bottom-right corner). Each kind has one shift mask,
# the same at every map size, so one attention bias per kind serves every window of it.
_WINDOW_KINDS = 4


def _window_kind_masks(size: int, shift: int, device: torch.device) -> torch.Tensor:
    """The shift mask (kinds, N, N) of each window kind; kind 0's is all zero.

    A 2x2-window map has exactly one window of each kind, in kind order.
    """
    return _shifted_window_mask(2 * size, 2 * size, size, shift, device)


def _window_kinds(grid_rows: int, grid_cols: int, shifted: bool) -> torch.Tensor:
    """The kind of each window of a grid, row-major, on the CPU."""
    kinds = torch.zeros(grid_rows, grid_cols, dtype=torch.long)
    if shifted:
        kinds[:, -1] = 1
        kinds[-1, :] = 2
        kinds[-1, -1] = 3
    return kinds.flatten()


class WindowLayout:
    """Where each token goes when a (padded, optionally shifted) map is cut into windows, and back.

    The padding, the cyclic shift and the window partition are one permutation of the
    tokens, so each direction is a single row gather over a precomputed index instead of
    pad + roll + permute copies; the reverse gather also drops the padding.

    Windows are grouped by kind (see `_WINDOW_KINDS`), all images' windows of a kind
    together, so attention runs once per kind with one broadcast bias, whatever the
    batch size. `spans` lists (first window, end, kind) per non-empty group. Cached per
    input shape.
    """

    def __init__(self, batch: int, h: int, w: int, size: int, shift: int, device: torch.device):
        hp, wp = h + (-h % size), w + (-w % size)
        rows = ((torch.arange(hp, device=device) + shift) % hp)[:, None]
        cols = ((torch.arange(wp, device=device) + shift) % wp)[None, :]
        source = torch.where((rows < h) & (cols < w), rows * w + cols, -1)
        source = _to_windows(source[None, :, :, None], size).flatten(1)  # window, token -> map token or -1
        kinds = _window_kinds(hp // size, wp // size, bool(shift))
        counts = torch.bincount(kinds, minlength=_WINDOW_KINDS).tolist()
        by_kind = source[torch.argsort(kinds, stable=True).to(device)]
        offsets = torch.arange(batch, device=device)[:, None, None] * (h * w)
        per_image = torch.where(by_kind >= 0, by_kind + offsets, -1)  # image, window (grouped by kind), token
        order = torch.cat([group.flatten() for group in per_image.split(counts, dim=1)])
        valid = order >= 0
        self.spans = self._spans([batch * count for count in counts])
        self._gather = order.clamp(min=0)
        self._padding = (~valid).nonzero().flatten()
        self._scatter = torch.empty(batch * h * w, dtype=torch.long, device=device)
        self._scatter[order[valid]] = valid.nonzero().flatten()
        self._tokens = size * size

    @staticmethod
    def _spans(windows_per_kind: list[int]) -> tuple[tuple[int, int, int], ...]:
        spans, start = [], 0
        for kind, count in enumerate(windows_per_kind):
            if count:
                spans.append((start, start + count, kind))
            start += count
        return tuple(spans)

    def partition(self, x: torch.Tensor, padding_value: torch.Tensor | None = None) -> torch.Tensor:
        """(B, H*W, C) -> (B * windows, N, C); padding tokens get `padding_value` (a C-vector), or zero."""
        c = x.shape[-1]
        windows = x.reshape(-1, c).index_select(0, self._gather)
        if self._padding.numel():
            # Expanded to the rows it fills: torch.onnx exports a broadcast row assignment wrongly.
            fill = 0 if padding_value is None else padding_value.expand(self._padding.numel(), c)
            windows[self._padding] = fill
        return windows.view(-1, self._tokens, c)

    def merge(self, windows: torch.Tensor, batch: int) -> torch.Tensor:
        """(B * windows, N, C) -> (B, H*W, C), padding dropped."""
        c = windows.shape[-1]
        return windows.reshape(-1, c).index_select(0, self._scatter).view(batch, -1, c)


# Layouts kept for eager forwards: a forward uses two per stage, so this holds every batch size
# of a micro-batch at a few inference sizes.
_CACHED_LAYOUTS = 128
# Layouts a CUDA graph was captured with, by shape: never evicted (see `window_layout`).
_graph_layouts: dict[tuple, WindowLayout] = {}


def window_layout(batch: int, h: int, w: int, size: int, shift: int, device: torch.device) -> WindowLayout:
    """Layouts depend on shapes only: built once per shape, then reused by every forward.

    The cache is bounded, since a server asked for many inference and batch sizes would
    otherwise grow it for ever; the least recently used layouts go first. A captured CUDA
    graph, though, reads its layouts' index tensors by address, so a layout used while a
    graph is captured must live as long as the graph: it is kept apart, for the life of the
    process, as the graphs themselves are, and handed out for its shape from then on.
    """
    # int(): under torch.onnx/jit tracing the sizes arrive as 0-d tensors; a layout is a constant of the shape.
    key = (int(batch), int(h), int(w), size, shift, device)
    layout = _graph_layouts.get(key) or _cached_layout(*key)
    if _capturing_graph(device):
        _graph_layouts[key] = layout
    return layout


@functools.lru_cache(maxsize=_CACHED_LAYOUTS)
def _cached_layout(batch: int, h: int, w: int, size: int, shift: int, device: torch.device) -> WindowLayout:
    return WindowLayout(batch, h, w, size, shift, device)


def _capturing_graph(device: torch.device) -> bool:
    """Whether this forward is being captured into a CUDA graph (never while torch.compile traces it)."""
    return device.type == "cuda" and not torch.compiler.is_compiling() and torch.cuda.is_current_stream_capturing()


def _version(tensor: torch.Tensor) -> int:
    """The tensor's in-place write counter; inference tensors keep none (-1)."""
    try:
        return tensor._version
    except RuntimeError:
        return -1


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative position bias.

    The attention biases (position bias, plus each window kind's shift mask) are built
    once per dtype and device and cached, as SDPA's fused kernels want them: for each
    call an additive float mask of q's dtype, (1, heads, N, N) broadcast over the
    windows, contiguous so that its last dimension has stride 1 (a mask with any other
    last-dim stride, such as a permuted view of the bias table, sends every call to the
    unfused math path in float32). On CUDA the kernel that takes such a mask is the
    memory-efficient one (flash attention takes none); it also needs q, k and v 4-D with
    last-dim stride 1 and a head dim that is a multiple of 8 (Swin's is 32), and copies a
    mask whose rows are not aligned to its access width (Swin-L's 144 tokens are, Swin-T's
    49 are not: a small copy per call). The CPU's flash kernel takes masks of any stride.

    The cache is keyed on the weights (address and in-place write counter of the bias
    table and index) and cleared by `load_state_dict`, so loading or editing weights after
    a forward rebuilds it. It serves inference only: with autograd on, or under
    torch.compile, the biases are built per call.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int = 0):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift = shift
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", _relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self._biases: dict[tuple[torch.dtype, torch.device], tuple[tuple[int, ...], torch.Tensor]] = {}

    def position_bias(self) -> torch.Tensor:
        """(heads, N, N), a permuted view: the table's rows are per head offset pair."""
        n = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def build_biases(self, dtype: torch.dtype) -> torch.Tensor:
        """(kinds, heads, N, N) contiguous: the position bias plus each window kind's shift mask.

        The sum is taken in the table's dtype, then cast, as the checkpoints' reference does.
        """
        bias = self.position_bias()
        if self.shift:
            bias = bias + _window_kind_masks(self.window_size, self.shift, bias.device).to(bias.dtype)[:, None]
        else:
            bias = bias[None]
        return bias.to(dtype).contiguous()

    def attention_biases(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """`build_biases(dtype)`, from the cache when the weights are unchanged since it was built."""
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self.build_biases(dtype)
        stamp = tuple(
            value
            for tensor in (self.relative_position_bias_table, self.relative_position_index)
            for value in (tensor.data_ptr(), _version(tensor))
        )
        cached = self._biases.get((dtype, device))
        if cached is None or cached[0] != stamp:
            cached = self._biases[(dtype, device)] = (stamp, self.build_biases(dtype))
        return cached[1]

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        """Loading weights drops the cached biases (inference tensors keep no write counter to tell)."""
        self._biases.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
        """x: (B, H*W, C) normalised tokens; `layout` matches this block's shift.

        The projections are per token, so they run on the map's tokens, not on the
        windows: padding tokens (zero, so their qkv is the qkv bias) cost no matmul
        rows, which is up to a quarter of them at the deep stages. q, k and v stay
        strided views and go to the fused attention kernel as 4-D tensors (5-D ones
        fall back to the slow reference path), one call per window kind.
        """
        b, _, c = x.shape
        heads = self.num_heads
        windows = layout.partition(self.qkv(x), self.qkv.bias)
        bw, n, _ = windows.shape
        q, k, v = windows.view(bw, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)  # each (B*windows, heads, N, d)
        biases = self.attention_biases(q.dtype, q.device)
        # The kernel's output is laid out (windows, N, heads, d): concatenating the transposed
        # views gives (windows, N, C) rows without another copy.
        out = [
            F.scaled_dot_product_attention(
                q[i:j], k[i:j], v[i:j], attn_mask=biases[kind : kind + 1], scale=self.scale
            ).transpose(1, 2)
            for i, j, kind in layout.spans
        ]
        return self.proj(layout.merge((out[0] if len(out) == 1 else torch.cat(out)).reshape(bw, n, c), b))
