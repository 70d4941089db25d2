"""Self-MM's Unimodal Label Generation Module (ULGM), docs/baselines.md.

The ULGM is trainer state, not part of the model: per-sample feature memories, per-sample label
tables and positive/negative class centres for the four modes (fusion, text, audio, vision).
None of it receives gradients. Everything is vectorised over the batch (and over the whole
memory for the centres); the only Python loop runs over the four modes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mer_bench.errors import AdapterError

MODES: tuple[str, ...] = ("f", "t", "a", "v")
"""ULGM modes: fusion and the three unimodal ones (heads M, T, A, V)."""
UNIMODAL: tuple[str, ...] = ("t", "a", "v")
EPS = 1e-8
"""The reference's MIN, in both denominators of the pseudo-label update."""


class ULGM:
    """Feature memory, pseudo-label tables and class centres of one training run.

    ``labels`` is an (4, N) table whose rows follow ``MODES``; row ``f`` is set to the
    ground-truth regression score once (``init_labels``) and never changes afterwards.
    """

    def __init__(
        self,
        num_samples: int,
        feature_dims: Mapping[str, int],
        *,
        clamp: float = 3.0,
        exclude_zero: bool = True,
        device: torch.device | str = "cpu",
    ) -> None:
        if num_samples < 1:
            raise AdapterError("Self-MM's ULGM needs a non-empty training split")
        missing = [m for m in MODES if m not in feature_dims]
        if missing:
            raise AdapterError(f"ULGM feature_dims lacks modes {missing}")
        self.num_samples = int(num_samples)
        self.clamp = float(clamp)
        self.exclude_zero = bool(exclude_zero)
        dev = torch.device(device)
        self.features = {m: torch.zeros(num_samples, feature_dims[m], device=dev) for m in MODES}
        self.labels = torch.zeros(len(MODES), num_samples, device=dev)
        self.centres = {
            m: torch.zeros(2, feature_dims[m], device=dev) for m in MODES
        }  # row 0 = positive centre, row 1 = negative centre

    # ------------------------------------------------------------------ tables
    def row(self, mode: str) -> int:
        return MODES.index(mode)

    def init_labels(self, scores: torch.Tensor) -> None:
        """Every label table starts as the ground-truth multimodal score."""
        scores = scores.to(self.labels.device, torch.float32).reshape(-1)
        if scores.shape[0] != self.num_samples:
            raise AdapterError(
                f"ULGM has {self.num_samples} memory rows but got {scores.shape[0]} labels"
            )
        self.labels.copy_(scores.unsqueeze(0).expand_as(self.labels))

    def targets(self, index: torch.Tensor) -> torch.Tensor:
        """(4, B) current labels of the samples at ``index`` (rows f, t, a, v)."""
        return self.labels[:, index]

    def loss_weights(self, index: torch.Tensor) -> torch.Tensor:
        """(3, B) weights tanh(|y_s − y_M|) for s ∈ {t, a, v}; no gradient."""
        labels = self.labels[:, index]
        return torch.tanh((labels[1:] - labels[:1]).abs())

    # ------------------------------------------------------------------ pseudo-labels
    def _relative_distance(self, mode: str, feats: torch.Tensor) -> torch.Tensor:
        # Plain (non-squared, unscaled) Euclidean distances, as the released code does:
        # the paper's squared/√d form is deliberately not used.
        centres = self.centres[mode]
        d_pos = torch.linalg.vector_norm(feats - centres[0], dim=-1)
        d_neg = torch.linalg.vector_norm(feats - centres[1], dim=-1)
        return (d_neg - d_pos) / (d_pos + EPS)

    def update_labels(
        self, index: torch.Tensor, feats: Mapping[str, torch.Tensor], epoch: int
    ) -> None:
        """New pseudo-labels for the samples at ``index`` from the current centres.

        The caller only calls this from epoch 2 on; ``epoch`` is 1-based.
        """
        if epoch < 2:
            raise AdapterError("ULGM label updates start at epoch 2 (docs/baselines.md)")
        y_m = self.labels[0, index]
        delta_f = self._relative_distance("f", feats["f"])
        n = float(epoch)
        for mode in UNIMODAL:
            delta_s = self._relative_distance(mode, feats[mode])
            alpha = delta_s / (delta_f + EPS)
            candidate = 0.5 * alpha * y_m + 0.5 * (y_m + delta_s - delta_f)
            candidate = candidate.clamp(-self.clamp, self.clamp)
            r = self.row(mode)
            old = self.labels[r, index]
            self.labels[r, index] = (n - 1.0) / (n + 1.0) * old + 2.0 / (n + 1.0) * candidate

    # ------------------------------------------------------------------ memory
    def write_features(self, index: torch.Tensor, feats: Mapping[str, torch.Tensor]) -> None:
        """Remember each sample's most recent (train-mode) features."""
        for mode in MODES:
            self.features[mode][index] = feats[mode].detach().to(self.features[mode].dtype)

    def update_centres(self) -> None:
        """Unweighted means of the memory over positive / negative labelled rows.

        Fusion centres use the ground truth (row f), unimodal ones their own pseudo-labels.
        Deviation: the reference yields NaN for an empty set (it never happens on MOSI/MOSEI);
        here an empty set keeps the previous centre, so tiny or one-signed data stay finite.
        """
        labels = self.labels
        positive = labels >= 0 if not self.exclude_zero else labels > 0
        negative = labels < 0
        members = torch.stack((positive, negative), dim=1).to(labels.dtype)  # (4, 2, N)
        counts = members.sum(dim=-1, keepdim=True)  # (4, 2, 1)
        for r, mode in enumerate(MODES):
            sums = members[r] @ self.features[mode]  # (2, P)
            means = sums / counts[r].clamp_min(1.0)
            self.centres[mode] = torch.where(counts[r] > 0, means, self.centres[mode])

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, torch.Tensor]:
        out = {"labels": self.labels}
        for mode in MODES:
            out[f"features_{mode}"] = self.features[mode]
            out[f"centres_{mode}"] = self.centres[mode]
        return out

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        expected = set(self.state())
        if set(state) != expected:
            raise AdapterError(
                f"Self-MM ULGM state has keys {sorted(state)}, expected {sorted(expected)}"
            )
        for key, value in state.items():
            target = self.labels if key == "labels" else None
            if target is None:
                kind, mode = key.split("_", 1)
                target = self.features[mode] if kind == "features" else self.centres[mode]
            if tuple(value.shape) != tuple(target.shape):
                raise AdapterError(
                    f"Self-MM ULGM state {key!r} has shape {tuple(value.shape)}, "
                    f"expected {tuple(target.shape)} (was it saved for another training split?)"
                )
            target.copy_(value.to(target.device, target.dtype))

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, torch.Tensor],
        *,
        clamp: float,
        exclude_zero: bool,
        device: torch.device | str,
    ) -> ULGM:
        """Rebuild a ULGM whose sizes are read from a saved state."""
        try:
            num = int(state["labels"].shape[1])
            dims = {m: int(state[f"features_{m}"].shape[1]) for m in MODES}
        except KeyError as exc:
            raise AdapterError(f"Self-MM ULGM state lacks {exc.args[0]!r}") from None
        ulgm = cls(num, dims, clamp=clamp, exclude_zero=exclude_zero, device=device)
        ulgm.load_state(state)
        return ulgm
