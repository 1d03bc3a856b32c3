"""Parameter-efficient adapters on a loaded model (LoRA), in PEFT's file format."""
