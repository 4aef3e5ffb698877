"""Pure torch components: LoRA layout and the batched hook forward, delta, losses, weight tokens,
generator, scoring. No files and no config: each module owns its options and takes plain values."""
