"""Text in, training blocks out: text sources (``corpus``), tokenize-and-pack into a memmap cache (``packing``) and
the ``TextDataModule`` that serves the blocks and owns the multi-round plan (``datamodule``)."""
