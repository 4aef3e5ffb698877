"""The pipeline's model files: the base model, PEFT adapters, the generator, the teacher index, the
delta cache."""
