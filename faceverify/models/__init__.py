"""Shipped model weights (safetensors) and their model cards (JSON); installed as faceverify.models."""
