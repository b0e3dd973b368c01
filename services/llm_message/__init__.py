"""Reply task: Oh-LoRA's answer to the final input, streamed."""
