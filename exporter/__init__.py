"""Export trained adapters: merge, convert with llama.cpp's own converter, quantize, write a bundle."""
