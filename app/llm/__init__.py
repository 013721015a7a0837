"""The local model: locating the GGUF file, building prompts and generating with llama.cpp."""
