"""Published SHA-256 sums of data files, so ``data check`` can say whether a download matches.

Source: the README of thuiar/MMSA (section "Datasets", "SHA-256 for feature files"), copied
verbatim. CIDer publishes no sums for its OOD and cross-dataset pickles, so none are listed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

KNOWN_SHA256: dict[str, str] = {
    "78e0f8b5ef8ff71558e7307848fc1fa929ecb078203f565ab22b9daab2e02524": (
        "MMSA MOSI/Processed/unaligned_50.pkl"
    ),
    "d3994fd25681f9c7ad6e9c6596a6fe9b4beb85ff7d478ba978b124139002e5f9": (
        "MMSA MOSI/Processed/aligned_50.pkl"
    ),
    "ad8b23d50557045e7d47959ce6c5b955d8d983f2979c7d9b7b9226f6dd6fec1f": (
        "MMSA MOSEI/Processed/unaligned_50.pkl"
    ),
    "45eccfb748a87c80ecab9bfac29582e7b1466bf6605ff29d3b338a75120bf791": (
        "MMSA MOSEI/Processed/aligned_50.pkl"
    ),
    "c9e20c13ec0454d98bb9c1e520e490c75146bfa2dfeeea78d84de047dbdd442f": (
        "MMSA SIMS/Processed/unaligned_39.pkl (CH-SIMS, not a mer_bench dataset)"
    ),
}
"""sha256 hex digest → the published file it identifies."""


def sha256_file(path: Path, chunk_size: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file, read in chunks (real files are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def known_file(sha256: str) -> str | None:
    """The published file a digest identifies, or None."""
    return KNOWN_SHA256.get(sha256.lower())
