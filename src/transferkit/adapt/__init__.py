"""Domain adaptation on frozen-backbone features: closed-form alignment, adapters, unsupervised model selection."""
