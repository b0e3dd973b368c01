"""Expression task: eyes, mouth and head turn for Oh-LoRA's reply."""
