"""Files on disk: safe atomic writes and cache folders (``io``), the model dir (``model_dir``), conversion from GGUF
and Hugging Face folders (``convert``), and the ``builtin:`` names, resolved once at the edge (``builtin``)."""
