"""The guide's hybrid CNN+LSTM price model.

Data flow for a window ``x`` of shape ``(B, L, F)``::

    normalise (train-fitted buffers)
      -> CNNFeatureExtractor   multi-scale Conv1d ('same' length) + self-attention over time
      -> LSTMTemporalProcessor BiLSTM over the CNN sequence + linear skip
      -> FeatureFusion         CNN features attend to LSTM features (cross-attention),
                               attention pooling over time, 3-class + regression heads

Deviations from the guide's snippets are listed in ``docs/model.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from kubetrade.errors import ConfigError
from kubetrade.models.fast_dropout import FastDropout, lstm_output, multihead_attention
from kubetrade.models.labels import CLASS_NAMES, CLASS_POSITIONS

__all__ = [
    "CLASS_NAMES",
    "CLASS_POSITIONS",
    "CNNFeatureExtractor",
    "LSTMTemporalProcessor",
    "FeatureFusion",
    "HybridCNNLSTM",
    "ExportWrapper",
]


def _split_channels(total: int, parts: int) -> list[int]:
    """``total`` channels over ``parts`` branches: ``total // parts`` each, remainder to the first."""
    base, rest = divmod(total, parts)
    return [base + (1 if i < rest else 0) for i in range(parts)]


class CNNFeatureExtractor(nn.Module):
    """Multi-scale 1-D convolutions followed by multi-head self-attention over time.

    Args:
        input_channels: features per time step.
        hidden_dim: output channels (summed over all branches).
        filter_sizes: kernel size of each branch; even sizes are padded asymmetrically
            (more on the left) so every branch keeps the sequence length.
        num_heads: attention heads (must divide ``hidden_dim``).
        dropout: attention and post-attention dropout.
        batch_norm: BatchNorm1d after each convolution.
        layer_norm: residual + LayerNorm around the attention.
    """

    def __init__(
        self,
        input_channels: int = 5,
        hidden_dim: int = 256,
        filter_sizes: Sequence[int] = (3, 5, 7, 11),
        num_heads: int = 8,
        dropout: float = 0.1,
        batch_norm: bool = False,
        layer_norm: bool = True,
    ) -> None:
        super().__init__()
        if len(filter_sizes) > hidden_dim:
            raise ConfigError(
                f"model.cnn.hidden_dim ({hidden_dim}) is smaller than the number of "
                f"filter_sizes ({len(filter_sizes)}); each branch needs at least one channel"
            )
        branches = []
        for kernel, channels in zip(
            filter_sizes, _split_channels(hidden_dim, len(filter_sizes)), strict=True
        ):
            left = (kernel - 1) // 2
            branches.append(
                nn.Sequential(
                    # causal data, but 'same' padding inside a window only mixes bars of that window
                    nn.ConstantPad1d((left, kernel - 1 - left), 0.0),
                    nn.Conv1d(input_channels, channels, kernel_size=kernel, bias=not batch_norm),
                    nn.BatchNorm1d(channels) if batch_norm else nn.Identity(),
                    nn.ReLU(),
                )
            )
        self.branches = nn.ModuleList(branches)
        self.attention = nn.MultiheadAttention(
            hidden_dim, num_heads, dropout=dropout, batch_first=True
        )
        self.norm = nn.LayerNorm(hidden_dim) if layer_norm else nn.Identity()
        self.dropout = FastDropout(dropout)
        self.residual = layer_norm
        self.out_dim = hidden_dim

    def _attend(self, seq: Tensor, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        if not torch.jit.is_scripting():  # TorchScript does not compile this block
            return multihead_attention(self.attention, seq, seq, seq, need_weights)
        return self.attention(seq, seq, seq, need_weights=need_weights)

    def forward(self, x: Tensor, need_weights: bool = True) -> tuple[Tensor, Tensor | None]:
        """``x`` (B, L, F) -> features (B, L, hidden_dim), self-attention weights (B, L, L)."""
        channels_first = x.transpose(1, 2)
        conv = torch.cat([branch(channels_first) for branch in self.branches], dim=1)
        seq = conv.transpose(1, 2)  # (B, L, C): attend across time, not channels
        attended, weights = self._attend(seq, need_weights)
        attended = self.dropout(attended)
        out = self.norm(seq + attended) if self.residual else attended
        return out, weights


class LSTMTemporalProcessor(nn.Module):
    """(Bi)LSTM with a linear skip connection from its input to its output.

    Args:
        input_dim: features per step of the incoming sequence.
        hidden_dim: LSTM hidden size per direction.
        num_layers: stacked LSTM layers.
        bidirectional: run a backward LSTM too (output size doubles).
        dropout: dropout between LSTM layers (ignored for one layer).
        layer_norm: LayerNorm on the summed output.
    """

    def __init__(
        self,
        input_dim: int = 256,
        hidden_dim: int = 128,
        num_layers: int = 2,
        bidirectional: bool = True,
        dropout: float = 0.2,
        layer_norm: bool = True,
    ) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            input_size=input_dim,
            hidden_size=hidden_dim,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.out_dim = hidden_dim * (2 if bidirectional else 1)
        self.skip_connection = nn.Linear(input_dim, self.out_dim)
        self.norm = nn.LayerNorm(self.out_dim) if layer_norm else nn.Identity()

    def _run_lstm(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():  # TorchScript does not compile this block
            return lstm_output(self.lstm, x)
        return self.lstm(x)[0]

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, L, input_dim) -> (B, L, out_dim)."""
        lstm_out = self._run_lstm(x)
        return self.norm(lstm_out + self.skip_connection(x))


class FeatureFusion(nn.Module):
    """Cross-attention (CNN queries, LSTM keys/values), pooling over time and the two heads.

    Args:
        cnn_dim: CNN feature size.
        lstm_dim: LSTM feature size.
        output_dim: common projection size (must be divisible by ``num_heads``).
        num_heads: cross-attention heads.
        dropout: attention and head dropout.
        layer_norm: residual + LayerNorm around the cross-attention.
        pooling: ``"attention"`` (learned softmax weights over time) or ``"last"`` (last step).
    """

    def __init__(
        self,
        cnn_dim: int = 256,
        lstm_dim: int = 256,
        output_dim: int = 256,
        num_heads: int = 8,
        dropout: float = 0.1,
        layer_norm: bool = True,
        pooling: str = "attention",
    ) -> None:
        super().__init__()
        if pooling not in ("attention", "last"):
            raise ConfigError(f"pooling {pooling!r} is not supported; use 'attention' or 'last'")
        self.cnn_proj = nn.Linear(cnn_dim, output_dim)
        self.lstm_proj = nn.Linear(lstm_dim, output_dim)
        self.cross_attention = nn.MultiheadAttention(
            output_dim, num_heads, dropout=dropout, batch_first=True
        )
        self.norm = nn.LayerNorm(output_dim) if layer_norm else nn.Identity()
        self.residual = layer_norm
        # no bias: softmax over time ignores a constant; 'last' has no scorer, so DDP sees no
        # unused parameters
        self.pool_score = (
            nn.Linear(output_dim, 1, bias=False) if pooling == "attention" else nn.Identity()
        )
        self.pooling = pooling
        self.head_dropout = FastDropout(dropout)
        self.classifier = nn.Linear(output_dim, 3)  # buy / hold / sell
        self.regressor = nn.Linear(output_dim, 1)  # forward return (scaled)

    def _attend(
        self, query: Tensor, memory: Tensor, need_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        attn = self.cross_attention
        if not torch.jit.is_scripting():  # TorchScript does not compile this block
            return multihead_attention(attn, query, memory, memory, need_weights)
        return attn(query, memory, memory, need_weights=need_weights)

    def forward(
        self, cnn_features: Tensor, lstm_features: Tensor, need_weights: bool = True
    ) -> dict[str, Tensor]:
        """Both inputs (B, L, *) -> dict of logits (B, 3), regression (B,), weights, features."""
        query = self.cnn_proj(cnn_features)
        memory = self.lstm_proj(lstm_features)
        attended, weights = self._attend(query, memory, need_weights)
        fused = self.norm(query + attended) if self.residual else attended
        if self.pooling == "attention":
            pool = torch.softmax(self.pool_score(fused).squeeze(-1), dim=1)  # (B, L)
            pooled = torch.bmm(pool.unsqueeze(1), fused).squeeze(1)
        else:
            pool = torch.zeros(
                fused.shape[0], fused.shape[1], dtype=fused.dtype, device=fused.device
            )
            pool[:, -1] = 1.0
            pooled = fused[:, -1]
        hidden = self.head_dropout(pooled)
        out: dict[str, Tensor] = {
            "classification": self.classifier(hidden),
            "regression": self.regressor(hidden).squeeze(-1),
            "features": pooled,
            "pooling_weights": pool,
        }
        if weights is not None:
            out["attention_weights"] = weights
        return out


class HybridCNNLSTM(nn.Module):
    """CNN -> (Bi)LSTM -> cross-attention fusion, with classification and regression heads.

    ``forward(x)`` takes windows ``(B, L, F)`` and returns a dict with ``classification``
    (B, 3) logits in :data:`CLASS_NAMES` order, ``regression`` (B,) forward return in
    return units, ``attention_weights`` (B, L, L) cross-attention, ``cnn_attention_weights``
    (B, L, L), ``pooling_weights`` (B, L) and ``features`` (B, output_dim).

    Inputs are standardised inside the model with buffers the trainer fits on the train
    split (:meth:`set_normalization`), so exported graphs carry the preprocessing.

    The keyword constructor accepts the guide's style
    (``HybridCNNLSTM(dropout=0.2, batch_norm=True, layer_norm=True)``). ``weight_decay`` and
    ``gradient_clip`` are training settings: they are kept as attributes for the trainer and
    do not change the network.
    """

    def __init__(
        self,
        n_features: int = 5,
        *,
        cnn_hidden_dim: int = 256,
        filter_sizes: Sequence[int] = (3, 5, 7, 11),
        cnn_num_heads: int = 8,
        cnn_dropout: float = 0.1,
        lstm_hidden_dim: int = 128,
        lstm_num_layers: int = 2,
        bidirectional: bool = True,
        lstm_dropout: float = 0.2,
        fusion_dim: int = 256,
        fusion_num_heads: int = 8,
        fusion_dropout: float | None = None,
        dropout: float | None = None,
        batch_norm: bool = False,
        layer_norm: bool = True,
        pooling: str = "attention",
        input_channels: int | None = None,
        weight_decay: float | None = None,
        gradient_clip: float | None = None,
    ) -> None:
        super().__init__()
        n_features = input_channels if input_channels is not None else n_features
        if dropout is not None:
            cnn_dropout = lstm_dropout = dropout
        fusion_dropout = cnn_dropout if fusion_dropout is None else fusion_dropout
        for name, dim, heads in (
            ("cnn_hidden_dim", cnn_hidden_dim, cnn_num_heads),
            ("fusion_dim", fusion_dim, fusion_num_heads),
        ):
            if dim % heads:
                raise ConfigError(f"{name} ({dim}) must be divisible by its num_heads ({heads})")
        self.config: dict[str, Any] = {
            "n_features": n_features,
            "cnn_hidden_dim": cnn_hidden_dim,
            "filter_sizes": [int(k) for k in filter_sizes],
            "cnn_num_heads": cnn_num_heads,
            "cnn_dropout": cnn_dropout,
            "lstm_hidden_dim": lstm_hidden_dim,
            "lstm_num_layers": lstm_num_layers,
            "bidirectional": bidirectional,
            "lstm_dropout": lstm_dropout,
            "fusion_dim": fusion_dim,
            "fusion_num_heads": fusion_num_heads,
            "fusion_dropout": fusion_dropout,
            "batch_norm": batch_norm,
            "layer_norm": layer_norm,
            "pooling": pooling,
        }
        self.weight_decay = weight_decay
        self.gradient_clip = gradient_clip
        self.cnn = CNNFeatureExtractor(
            n_features,
            cnn_hidden_dim,
            filter_sizes,
            cnn_num_heads,
            cnn_dropout,
            batch_norm,
            layer_norm,
        )
        self.lstm = LSTMTemporalProcessor(
            cnn_hidden_dim,
            lstm_hidden_dim,
            lstm_num_layers,
            bidirectional,
            lstm_dropout,
            layer_norm,
        )
        self.fusion = FeatureFusion(
            cnn_hidden_dim,
            self.lstm.out_dim,
            fusion_dim,
            fusion_num_heads,
            fusion_dropout,
            layer_norm,
            pooling,
        )
        self.register_buffer("input_mean", torch.zeros(n_features))
        self.register_buffer("input_std", torch.ones(n_features))
        self.register_buffer("target_scale", torch.ones(()))
        self.input_mean: Tensor  # typed for mypy (TorchScript rejects class annotations here)
        self.input_std: Tensor
        self.target_scale: Tensor
        self.n_features = n_features

    @classmethod
    def from_config(
        cls, model_cfg: Any, n_features: int | None = None, **overrides: Any
    ) -> HybridCNNLSTM:
        """Build from ``TrainingConfig.model``; ``n_features`` (from the data) wins over
        ``model.cnn.input_channels``."""
        kwargs: dict[str, Any] = {
            "n_features": n_features if n_features is not None else model_cfg.cnn.input_channels,
            "cnn_hidden_dim": model_cfg.cnn.hidden_dim,
            "filter_sizes": list(model_cfg.cnn.filter_sizes),
            "cnn_num_heads": model_cfg.cnn.num_heads,
            "cnn_dropout": model_cfg.cnn.dropout,
            "lstm_hidden_dim": model_cfg.lstm.hidden_dim,
            "lstm_num_layers": model_cfg.lstm.num_layers,
            "bidirectional": model_cfg.lstm.bidirectional,
            "lstm_dropout": model_cfg.lstm.dropout,
            "fusion_dim": model_cfg.fusion.output_dim,
            "fusion_num_heads": model_cfg.fusion.num_heads,
            "batch_norm": model_cfg.batch_norm,
            "layer_norm": model_cfg.layer_norm,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    @torch.no_grad()
    def set_normalization(self, mean: Tensor, std: Tensor, target_scale: float) -> None:
        """Store train-split feature mean/std and the regression target scale."""
        self.input_mean.copy_(torch.as_tensor(mean, dtype=self.input_mean.dtype))
        std_t = torch.as_tensor(std, dtype=self.input_std.dtype)
        self.input_std.copy_(torch.where(std_t > 1e-12, std_t, torch.ones_like(std_t)))
        self.target_scale.fill_(float(target_scale) if target_scale > 0 else 1.0)

    def _run(self, x: Tensor, need_weights: bool) -> dict[str, Tensor]:
        x = (x - self.input_mean) / self.input_std
        cnn_features, cnn_weights = self.cnn(x, need_weights)
        lstm_features = self.lstm(cnn_features)
        out = self.fusion(cnn_features, lstm_features, need_weights)
        out["regression"] = out["regression"] * self.target_scale
        if cnn_weights is not None:
            out["cnn_attention_weights"] = cnn_weights
        return out

    def forward(self, x: Tensor, need_weights: bool = True) -> dict[str, Tensor]:
        """Windows (B, L, F) -> dict of outputs (see class docstring).

        ``need_weights=False`` skips the attention maps (faster; used in training).
        """
        return self._run(x, need_weights)

    def export_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Windows (B, L, F) -> (logits (B, 3), regression (B,)); no attention maps."""
        out = self._run(x, False)
        return out["classification"], out["regression"]


class ExportWrapper(nn.Module):
    """Tuple-returning view of a :class:`HybridCNNLSTM` for TorchScript / ONNX."""

    def __init__(self, model: HybridCNNLSTM) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.export_forward(x)
