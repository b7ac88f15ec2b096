"""voxloop.distill: teachers (TTS, ASR, LLM), synthetic data, the student model."""
