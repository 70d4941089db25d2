"""The LSTM encoder of one audio or vision stream that Self-MM and EMT-DLFR both use.

Both originals run an LSTM over the stream's true lengths, take the last layer's final hidden
state, apply dropout and a Linear (``linear_1``); EMT-DLFR also keeps the per-step outputs as a
sequence. The submodule names (``rnn``, ``dropout``, ``linear_1``) are the originals', so the
state dicts of both models line up with theirs.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class StreamLSTM(nn.Module):
    """LSTM over one (B, L, in) stream; subclasses decide what ``forward`` returns.

    ``packed=True`` runs the LSTM over packed sequences as the originals do (one host sync for
    the lengths). ``packed=False`` runs it over the padded input and reads each sample's output
    at its last valid step: the same function for a unidirectional LSTM, without the host sync
    and several times faster on CPU, where packed backward is slow.
    """

    identity_if_same_width: ClassVar[bool] = False
    """True: ``linear_1`` is an Identity when the LSTM is as wide as the output."""

    def __init__(
        self,
        in_size: int,
        hidden_size: int,
        out_size: int,
        num_layers: int,
        dropout: float,
        packed: bool = True,
    ) -> None:
        super().__init__()
        self.packed = packed
        self.rnn = nn.LSTM(
            in_size,
            hidden_size,
            num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.dropout = nn.Dropout(dropout)
        # EMT-DLFR's original uses an Identity when the LSTM is already as wide as the output
        # (MOSEI: 16 → 16 and 32 → 32), so ``linear_1`` then has no state-dict entries.
        self.linear_1: nn.Module = (
            nn.Identity()
            if self.identity_if_same_width and hidden_size == out_size
            else nn.Linear(hidden_size, out_size)
        )

    def run(
        self, x: torch.Tensor, lengths: torch.Tensor, *, sequence: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The last layer's hidden state at each sample's last valid step (B, hidden) and, with
        ``sequence``, the per-step outputs (B, T, hidden) with zeros past each length (T is the
        batch's longest length when packed, the padded length otherwise); else None."""
        # Packing needs 1 <= length <= L; the data contract guarantees it for audio/vision, a
        # clamp keeps hand-made inputs from crashing (length 0 then reads one zero frame).
        lengths = lengths.clamp(1, x.shape[1])
        if self.packed:
            packed = pack_padded_sequence(
                x, lengths.to("cpu", torch.int64), batch_first=True, enforce_sorted=False
            )
            out_packed, (h_n, _) = self.rnn(packed)
            seq = pad_packed_sequence(out_packed, batch_first=True)[0] if sequence else None
            return h_n[-1], seq
        out, _ = self.rnn(x)
        step = (lengths - 1).to(torch.int64).view(-1, 1, 1).expand(-1, 1, out.shape[-1])
        last = out.gather(1, step).squeeze(1)
        if not sequence:
            return last, None
        valid = torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lengths.unsqueeze(1)
        return last, out * valid.unsqueeze(-1).to(out.dtype)
