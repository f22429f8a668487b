"""Model interpretability: attention maps and SHAP attributions.

* :class:`AttentionVisualizer` draws the model's own attention: CNN self-attention over time,
  the CNN->LSTM cross-attention, and the pooling weights over time (which bars the prediction
  leans on).
* :class:`SHAPExplainer` uses ``shap.GradientExplainer`` (expected gradients) on the
  classification logits. It needs only autograd, so it handles the LSTM and attention layers;
  ``shap.DeepExplainer``'s DeepLIFT rules do not cover ``nn.LSTM`` / ``nn.MultiheadAttention``.
"""

from __future__ import annotations

import base64
import html
import io
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kubetrade.errors import TrainingError
from kubetrade.models import CLASS_NAMES

__all__ = ["AttentionVisualizer", "SHAPExplainer", "remember_training_windows"]

# model -> evenly spaced training windows, recorded by the trainer: the default SHAP
# background (a registry, not a module attribute, so state_dict and exports are unchanged)
_TRAINING_WINDOWS: weakref.WeakKeyDictionary[nn.Module, np.ndarray] = weakref.WeakKeyDictionary()


def remember_training_windows(model: nn.Module, X: Any, keep: int = 200) -> None:
    """Record up to ``keep`` evenly spaced training windows of ``model`` for
    ``SHAPExplainer(model)`` without a background (the trainer calls this)."""
    array = np.asarray(X, dtype=np.float32)
    if len(array) > keep:
        array = array[np.linspace(0, len(array) - 1, keep).astype(int)]
    _TRAINING_WINDOWS[model] = np.ascontiguousarray(array)


def _default_background(model: nn.Module) -> np.ndarray:
    """The training windows the trainer recorded for ``model``, else one window at the
    training split's mean input (the normalisation buffers are fitted on training windows)."""
    remembered = _TRAINING_WINDOWS.get(model)
    if remembered is not None:
        return remembered
    mean, std = getattr(model, "input_mean", None), getattr(model, "input_std", None)
    if mean is None or std is None or (bool((mean == 0).all()) and bool((std == 1).all())):
        raise TrainingError(
            "SHAPExplainer(model) without a background needs a trained model (its input "
            "statistics come from the training windows); pass background=bundle.train"
        )
    return mean.detach().float().cpu().numpy()[None, None, :]


def _windows(x: Any) -> Tensor:
    array = np.asarray(getattr(x, "X", x), dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise TrainingError(
            f"expected a window (L, F) or windows (N, L, F), got shape {array.shape}"
        )
    return torch.from_numpy(array)


class AttentionVisualizer:
    """Extract and plot the attention maps of a :class:`~kubetrade.models.HybridCNNLSTM`."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @torch.no_grad()
    def attention_maps(self, sample_input: Any) -> dict[str, np.ndarray]:
        """Maps for the first window: ``cnn_self_attention`` (L, L), ``cross_attention``
        (L, L) (query = CNN step, key = LSTM step) and ``pooling`` (L,)."""
        was_training = self.model.training
        self.model.eval()
        try:
            device = next(self.model.parameters()).device
            out = self.model(_windows(sample_input)[:1].to(device), need_weights=True)
        finally:
            self.model.train(was_training)
        return {
            "cnn_self_attention": out["cnn_attention_weights"][0].float().cpu().numpy(),
            "cross_attention": out["attention_weights"][0].float().cpu().numpy(),
            "pooling": out["pooling_weights"][0].float().cpu().numpy(),
            "class_probabilities": torch.softmax(out["classification"][0].float(), -1)
            .cpu()
            .numpy(),
        }

    def visualize_attention(
        self, sample_input: Any, save_path: str | Path | None = None
    ) -> dict[str, np.ndarray]:
        """Return :meth:`attention_maps`; with ``save_path`` also write a ``.png`` or ``.html``."""
        maps = self.attention_maps(sample_input)
        if save_path is not None:
            path = Path(save_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            png = self._plot(maps)
            if path.suffix.lower() == ".html":
                probs = ", ".join(
                    f"{n}={p:.2f}"
                    for n, p in zip(CLASS_NAMES, maps["class_probabilities"], strict=True)
                )
                path.write_text(
                    "<!doctype html><html><head><meta charset='utf-8'><title>attention</title></head>"
                    f"<body><h1>Attention maps</h1><p>{html.escape(probs)}</p><img alt='attention' "
                    f"src='data:image/png;base64,{base64.b64encode(png).decode()}'/></body></html>",
                    encoding="utf-8",
                )
            elif path.suffix.lower() == ".png":
                path.write_bytes(png)
            else:
                raise TrainingError(f"save_path {path} must end in .png or .html")
        return maps

    @staticmethod
    def _plot(maps: dict[str, np.ndarray]) -> bytes:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        for ax, key, title in (
            (axes[0], "cnn_self_attention", "CNN self-attention (query step x key step)"),
            (axes[1], "cross_attention", "cross-attention (CNN step x LSTM step)"),
        ):
            image = ax.imshow(maps[key], cmap="viridis", aspect="auto")
            ax.set_title(title, fontsize=9)
            fig.colorbar(image, ax=ax)
        axes[2].bar(np.arange(len(maps["pooling"])), maps["pooling"])
        axes[2].set_title("pooling weight per time step", fontsize=9)
        axes[2].set_xlabel("time step (last = most recent)")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        return buffer.getvalue()


class _Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x, need_weights=False)["classification"]


class SHAPExplainer:
    """SHAP (expected gradients) attributions of the classification logits.

    Args:
        model: the hybrid model (evaluated in eval mode, on CPU).
        background: reference windows (N, L, F) or a WindowSet; 50-200 train windows suffice.
            Default: the model's training windows (recorded by the trainer), else for a model
            loaded from a checkpoint a window at the training split's mean input.
        feature_names: names of the last axis (defaults to ``f0..``).
        max_background: background rows kept (evenly spaced).
        nsamples: expected-gradient samples per explained window.
        seed: sampling seed (reproducible attributions).
    """

    def __init__(
        self,
        model: nn.Module,
        background: Any = None,
        feature_names: list[str] | None = None,
        max_background: int = 100,
        nsamples: int = 100,
        seed: int = 0,
    ) -> None:
        import shap

        self._mean_window = background is None and model not in _TRAINING_WINDOWS
        data = _windows(_default_background(model) if background is None else background)
        if len(data) > max_background:
            data = data[np.linspace(0, len(data) - 1, max_background).astype(int)]
        self.model = model.cpu().eval()
        self.feature_names = feature_names or [f"f{i}" for i in range(data.shape[-1])]
        if len(self.feature_names) != data.shape[-1]:
            raise TrainingError(
                f"{len(self.feature_names)} feature names for {data.shape[-1]} features"
            )
        self.nsamples = nsamples
        self.seed = seed
        self.background = data
        self.explainer = shap.GradientExplainer(_Logits(self.model), data)

    def explain_prediction(self, x: Any) -> dict[str, Any]:
        """Attributions for windows ``x`` ((L, F) or (N, L, F)).

        Returns:
            ``values`` (N, L, F, 3) per class, ``predicted_class`` (N,), ``predicted_values``
            (N, L, F) for each window's predicted class, ``class_names``.
        """
        windows = _windows(x)
        if self._mean_window and self.background.shape[1] != windows.shape[1]:
            # the mean-input background, repeated over the explained windows' length
            self.background = self.background[:, :1].repeat(1, windows.shape[1], 1)
            import shap

            self.explainer = shap.GradientExplainer(_Logits(self.model), self.background)
        values = self.explainer.shap_values(windows, nsamples=self.nsamples, rseed=self.seed)
        values = np.asarray(values)
        if (
            values.ndim == 4 and values.shape[0] == 3 and values.shape[-1] != 3
        ):  # list-per-class layout
            values = np.moveaxis(values, 0, -1)
        with torch.no_grad():
            predicted = _Logits(self.model)(windows).argmax(-1).numpy()
        chosen = np.take_along_axis(values, predicted[:, None, None, None], axis=-1)[..., 0]
        return {
            "values": values,
            "predicted_class": predicted,
            "predicted_values": chosen,
            "class_names": list(CLASS_NAMES),
        }

    def feature_importance(self, test_data: Any, n_samples: int = 64) -> dict[str, float]:
        """Mean |SHAP| per feature over ``n_samples`` evenly spaced windows, time steps and
        classes, largest first."""
        windows = _windows(test_data)
        if len(windows) > n_samples:
            windows = windows[np.linspace(0, len(windows) - 1, n_samples).astype(int)]
        values = self.explain_prediction(windows)["values"]
        scores = np.abs(values).mean(axis=(0, 1, 3))
        order = np.argsort(-scores)
        return {self.feature_names[i]: float(scores[i]) for i in order}
