"""AudioSet-pretrained weights: read PyTorch checkpoints, convert, catalog, cache.

- `checkpoint`: reads `.pth` files (zip and legacy formats) into numpy
  without PyTorch, through an allow-list unpickler.
- `architectures`: the PANNs architectures as data (front end, widths,
  embedding size, classes); Keras-free.
- `convert`: maps a PANNs state dict onto the Keras layers of
  `esc50tf.models.panns` and loads it into a model it is given.
- `catalog`: the official checkpoints (Zenodo record 3987831).
- `store`: converted weights files with their provenance, and the cache;
  converting or downloading takes the builder of the model the weights are
  for (`esc50tf.models.panns.build_reference`).
- `cli`: `esc50tf pretrained list | download | convert`, which passes that
  builder in.

`esc50tf.models` imports from here, and nothing here but `cli` imports
`esc50tf.models`, so there is no import circle.
"""
