"""Operator sub-commands of ``modality-gateway`` (worklist maintenance, MPPS inspection)."""
