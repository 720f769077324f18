"""Model loading (hub id, local path, or `tiny-*` preset), quantization and PEFT wrapping."""

from labcli.models.loader import LoadedModel, load_model
from labcli.models.peft_prep import LoraSettings, prepare_for_method

__all__ = ["LoadedModel", "load_model", "LoraSettings", "prepare_for_method"]
