"""The interpretable recommender. In: a `user_sequences` day. Out: a SASRec checkpoint, a TopK SAE on one layer's
hidden states, annotations of its features, a steering report, and steered recommendations for one client.

item_sequences / sku_sequences make the items; ranking and sasrec_training train and score; hidden_edits holds every
edit of a hidden state (SAE splice, mean ablation, steering); sae_training, annotation, steering read the layer;
stages chains them for the assets; store keeps them on disk; serving answers `ubp recommend`.
"""
