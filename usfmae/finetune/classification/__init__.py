"""Image classification fine-tuning (the paper's Table 2): config, protocols, models, training, reports."""
