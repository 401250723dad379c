"""Keys and hashes that may go into shards: derived from pixels or salted, never raw identifiers.

Nothing here sees DICOM tags, patient names or paths in the clear: content keys hash pixels,
source hashes are keyed with a secret salt so a path cannot be recovered by hashing guesses.
"""

from __future__ import annotations

import hashlib
import hmac

import cv2
import numpy as np

KEY_HEX_CHARS = 32  # 128 bits: collision-free for any realistic corpus, short enough for shard keys


def content_key(image: np.ndarray) -> str:
    """sha256 of the pixel bytes, shape and dtype (same pixels -> same key, on any machine)."""
    image = np.ascontiguousarray(image)
    digest = hashlib.sha256()
    digest.update(f"{image.dtype.str}:{image.shape}".encode())  # [H, W, 3] and [W, H, 3] differ
    digest.update(image.tobytes())
    return digest.hexdigest()[:KEY_HEX_CHARS]


def source_hash(relative_path: str, salt: str) -> str:
    """HMAC-sha256 of a POSIX relative path keyed by `salt`: groups frames of one source file
    (e.g. for splitting by source) without revealing the path."""
    if not salt:
        raise ValueError("source_hash needs a non-empty salt: an unsalted path hash can be reversed by guessing")
    normalised = relative_path.replace("\\", "/").lstrip("/")
    name = normalised.encode("utf-8", "surrogateescape")  # file names need not be UTF-8: hash their bytes
    return hmac.new(salt.encode(), name, hashlib.sha256).hexdigest()[:KEY_HEX_CHARS]


def perceptual_hash(image: np.ndarray) -> int:
    """64-bit difference hash (dHash): gray, shrink to 9x8, one bit per left<right neighbour pair.

    Near-identical frames (consecutive cine frames, re-encodes) differ in few bits; see hamming().
    """
    gray = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)  # [8, 9]
    bits = (small[:, 1:] > small[:, :-1]).flatten()  # [64]
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two perceptual hashes."""
    return (a ^ b).bit_count()
