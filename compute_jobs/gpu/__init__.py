"""NVIDIA GPU pieces the GPU checks build on: the datasheet and PCI scan, and the device boundary."""
