"""Record trainings run by other libraries into shenjing runs, and read their models.

- :mod:`shenjing.integrations.lightning`: ``ShenjingCallback`` for PyTorch Lightning;
- :mod:`shenjing.integrations.hf`: ``ShenjingTrainerCallback`` for the Hugging Face
  ``Trainer``, and the ``hf:FOLDER`` models of ``shenjing inspect``.

Each submodule imports its library only when imported itself (``import shenjing`` never
does), and says which extra to install when the library is missing.
"""
