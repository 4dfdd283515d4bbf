"""Dataset handling: metadata, download, audio decoding, TFRecords, tf.data, splits."""
