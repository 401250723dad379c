"""Lesion segmentation fine-tuning: config, image/mask pairs, the ViT + decoder model, training, metrics."""
