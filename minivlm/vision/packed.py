"""Native-resolution ViT input (Qwen2-VL, Wang et al. 2024): images and videos of any size, cut into
patches by the processor and packed into ONE sequence.

    pixel_values (N, C * T * p * p)   every patch of every image/video, flattened by the processor
    grid_thw     (I, 3)               per image/video: T' = frames / T, rows, cols of patches
      -> PatchEmbedding3D: a Conv3d with kernel = stride = (T, p, p), i.e. one Linear   (N, D)
      -> 2-D RoPE from each patch's (row, col)                                        (N, Dh)
      -> attention kept inside each temporal slice of each image: block-diagonal      (N, N)
      -> PatchMerger: 2x2 neighbours (consecutive in the processor's order) -> one LM token

The processor orders patches "merge-block major": for each temporal slice, for each m x m block of
the grid (row-major), the m*m patches of the block (row-major). So the m*m patches that the merger
fuses are consecutive, and positions must be produced in the same order (`patch_positions`).
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..blocks.mlp import MLP
from ..blocks.norms import make_norm


class PatchEmbedding3D(nn.Module):
    """A Conv3d over (T, p, p) cubes, applied to patches the processor has already cut and flattened.

    Kernel = stride = input size, so the conv is one dot product per output channel: exactly
    `Linear(C*T*p*p, D, bias=False)` with the kernel flattened (tests/test_qwen2_vl.py checks it).
    An image is two identical frames (the processor repeats it), so it uses the same weights as video.
    """

    def __init__(self, num_channels: int, temporal_patch_size: int, patch_size: int, hidden_size: int):
        super().__init__()
        self.cube = (num_channels, temporal_patch_size, patch_size, patch_size)
        kernel = self.cube[1:]
        self.proj = nn.Conv3d(num_channels, hidden_size, kernel_size=kernel, stride=kernel, bias=False)

    @property
    def patch_dim(self) -> int:
        c, t, p, _ = self.cube
        return c * t * p * p

    def forward(self, pixel_values: Tensor) -> Tensor:  # (N, C*T*p*p) -> (N, D)
        cubes = pixel_values.reshape(-1, *self.cube).to(self.proj.weight.dtype)  # (N, C, T, p, p)
        return self.proj(cubes).flatten(1)  # (N, D, 1, 1, 1) -> (N, D)


def check_grid(pixel_values: Tensor, grid_thw: Tensor, patch_dim: int, merge: int, what: str = "pixel_values") -> None:
    """pixel_values must hold sum(T*H*W) patches of patch_dim numbers; H, W multiples of the merge size."""
    if not torch.is_tensor(grid_thw) or grid_thw.dim() != 2 or grid_thw.shape[-1] != 3:
        shape = tuple(grid_thw.shape) if torch.is_tensor(grid_thw) else type(grid_thw).__name__
        raise ValueError(f"the grid of {what} must be an (images, 3) tensor of (t, h, w), got {shape}")
    if pixel_values.dim() != 2 or pixel_values.shape[1] != patch_dim:
        raise ValueError(f"{what} must be (patches, {patch_dim}) = flattened patches, got {tuple(pixel_values.shape)}")
    expected = int(grid_thw.prod(-1).sum())
    if expected != pixel_values.shape[0]:
        raise ValueError(f"the grid sizes {grid_thw.tolist()} describe {expected} patches but {what} holds "
                         f"{pixel_values.shape[0]}")
    if bool((grid_thw[:, 1:] % merge).any()):
        raise ValueError(f"grid rows and cols must be multiples of spatial_merge_size={merge}, got {grid_thw.tolist()}")


def patch_positions(grid_thw: Tensor, merge: int) -> tuple[Tensor, Tensor]:
    """(row, col) of every patch in the processor's merge-block-major order: two (N,) tensors."""
    rows, cols = [], []
    for t, h, w in grid_thw.tolist():
        r = torch.arange(h).view(h // merge, merge, 1, 1).expand(-1, -1, w // merge, merge)  # (bh, i, bw, j)
        c = torch.arange(w).view(1, 1, w // merge, merge).expand(h // merge, merge, -1, -1)
        # block-major: (bh, bw, i, j), then repeated for each temporal slice
        rows.append(r.permute(0, 2, 1, 3).flatten().repeat(t))
        cols.append(c.permute(0, 2, 1, 3).flatten().repeat(t))
    return torch.cat(rows).to(grid_thw.device), torch.cat(cols).to(grid_thw.device)


def attention_segments(grid_thw: Tensor) -> list[int]:
    """Lengths of the runs of patches that attend to each other: one per temporal slice of each
    image/video, h*w patches (HF's cu_seqlens: repeat_interleave(h*w, t))."""
    return [h * w for t, h, w in grid_thw.tolist() for _ in range(t)]


def block_diagonal_mask(lengths: list[int], device: torch.device | None = None) -> Tensor:
    """(1, 1, N, N) bool: patch q may see patch k iff both lie in the same segment — the readable
    picture of packing several images into one sequence."""
    segment = torch.repeat_interleave(torch.arange(len(lengths), device=device),
                                      torch.tensor(lengths, device=device))  # (N,) segment id of each patch
    return (segment[:, None] == segment[None, :])[None, None]


def window_order(grid_thw: Tensor, merge: int, window: int) -> tuple[Tensor, list[int]]:
    """Qwen2.5-VL's windows: each temporal slice's grid of merge units (h/m x w/m) is cut into
    window x window tiles (the last row/column of tiles may be smaller). Returns the merge units in
    window-by-window order, (N / m^2,) indices into the reading order, and the windows' lengths in
    patches (HF's get_vision_window_index; empty windows dropped)."""
    order, lengths, offset = [], [], 0
    for t, h, w in grid_thw.tolist():
        hm, wm = h // merge, w // merge
        index = torch.arange(t * hm * wm).reshape(t, hm, wm) + offset
        pad_h, pad_w = -hm % window, -wm % window
        tiles = F.pad(index, (0, pad_w, 0, pad_h), value=-1)  # -1: outside the grid
        tiles = tiles.reshape(t, (hm + pad_h) // window, window, (wm + pad_w) // window, window)
        tiles = tiles.permute(0, 1, 3, 2, 4).reshape(-1, window * window)  # (windows, units)
        for tile in tiles:
            inside = tile[tile >= 0]
            if len(inside):
                order.append(inside)
                lengths.append(len(inside) * merge * merge)
        offset += t * hm * wm
    return torch.cat(order).to(grid_thw.device), lengths


class PatchMerger(nn.Module):
    """LayerNorm, then each m x m block of neighbouring patches (consecutive in the sequence) is
    concatenated into one (m*m*D,) vector and an MLP maps it to the LM's width (HF's PatchMerger)."""

    def __init__(self, dim: int, out_dim: int, merge: int, eps: float = 1e-6, norm: str = "layer"):
        super().__init__()
        self.group = merge * merge
        self.norm = make_norm(norm, dim, eps)  # Qwen2.5-VL: RMSNorm
        self.mlp = MLP(dim * self.group, dim * self.group, act="gelu", out_dim=out_dim)

    def forward(self, x: Tensor) -> Tensor:  # (N, D) -> (N / m^2, out_dim)
        x = self.norm(x)
        return self.mlp(x.reshape(-1, x.shape[-1] * self.group))
