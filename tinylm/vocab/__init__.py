"""Vocabulary work behind ``tinylm tokenizer``: counting, choosing pieces (SentencePiece and BPE), row remap,
coverage. ``tinylm.vocab.compact`` joins them into the commands."""
