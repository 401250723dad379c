"""Fast colour step: the reference's HSV k-means, fitted with OpenCV on a pixel sample.

The reference fits scikit-learn k-means on every saturated pixel (a Doppler image has tens of
thousands). Cluster centres settle on a few thousand samples; every saturated pixel is then
assigned to its nearest centre, so the mask covers the same pixels at a fraction of the cost.
"""

import cv2
import numpy as np

from usfmae.cleaning.config import ColourConfig
from usfmae.cleaning.reference import clahe_on_lightness, drop_small_components
from usfmae.cleaning.strokes import brightness


def sampled_kmeans(pixels: np.ndarray, cfg: ColourConfig) -> tuple[np.ndarray, np.ndarray]:
    """Cluster pixels [N, 3] float32; returns (labels [N], centres [k, 3])."""
    rng = np.random.default_rng(cfg.seed)
    sample = pixels
    if 0 < cfg.kmeans_sample < len(pixels):
        sample = pixels[rng.choice(len(pixels), cfg.kmeans_sample, replace=False)]
    cv2.setRNGSeed(cfg.seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 0.5)
    _, _, centres = cv2.kmeans(sample, cfg.clusters, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    distances = ((pixels[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)  # [N, k]
    return distances.argmin(axis=1), centres


def chroma(image: np.ndarray) -> np.ndarray:
    """max(R, G, B) - min(R, G, B) per pixel. image: HxWx3 uint8 -> HxW uint8."""
    low = np.minimum(np.minimum(image[:, :, 0], image[:, :, 1]), image[:, :, 2])
    return brightness(image) - low


def colour_mask(image: np.ndarray, region: np.ndarray, cfg: ColourConfig) -> np.ndarray:
    """Saturated annotation pixels inside `region` (HxW bool). image: HxWx3 -> HxW uint8 0/255.

    HSV saturation is a ratio: a dark pixel with a little chroma noise (JPEG, video, frame
    grabbers: (10, 6, 4) has saturation 153) counts as saturated, and CLAHE makes it worse. A
    pixel is clustered only if its chroma (max - min of R, G, B) also reaches cfg.min_chroma.
    """
    hsv = cv2.cvtColor(clahe_on_lightness(image, cfg.clahe_clip, cfg.clahe_tiles), cv2.COLOR_RGB2HSV)
    saturated = (hsv[:, :, 1] > cfg.saturation_min) & region & (chroma(image) >= cfg.min_chroma)
    pixels = hsv[saturated].astype(np.float32)  # [N, 3] as (H, S, V)
    mask = np.zeros(hsv.shape[:2], np.uint8)
    if len(pixels) < cfg.clusters:
        return mask
    labels, centres = sampled_kmeans(pixels, cfg)
    kept = (centres[:, 1] > cfg.saturation_min) & (centres[:, 2] > cfg.value_min)
    mask[saturated] = np.where(kept[labels], 255, 0)
    return drop_small_components(mask, cfg.fast_min_component_px)
