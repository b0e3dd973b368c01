"""Face service: renders Oh-LoRA's face for batches of expressions (StyleGAN or the drawn sketch)."""
