"""Training: the ``LanguageModel`` LightningModule (``lm``), its optimizer and lr rule (``optim``), multiple-round
training (``rounds``), tokens/s and MFU (``throughput``), where a run writes and what it resumes (``runs``), and
the one-call ``fit`` for Python callers (``fit``)."""
