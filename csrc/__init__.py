"""The C++/CUDA sources of the training ops, shipped as package data (model/ops/build.py builds them)."""
