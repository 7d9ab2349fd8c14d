"""Sparse dictionaries (SAEs and transcoders) as unit sources beside a model's MLP neurons."""
