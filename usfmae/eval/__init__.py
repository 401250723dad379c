"""Evaluation shared by pretraining (the k-NN monitor) and fine-tuning: classification metrics,
stratified folds and frozen-encoder probes (k-NN, linear)."""
