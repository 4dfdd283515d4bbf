"""AudioSet-pretrained weights: read PyTorch checkpoints, convert, catalog, cache.

- `checkpoint`: reads `.pth` files (zip and legacy formats) into numpy
  without PyTorch, through an allow-list unpickler.
- `convert`: maps a PANNs state dict onto the Keras layers of
  `esc50tf.models.panns` and loads it.
- `catalog`: the official checkpoints (Zenodo record 3987831).
- `store`: converted weights files with their provenance, and the cache.
- `cli`: `esc50tf pretrained list | download | convert`.
"""
