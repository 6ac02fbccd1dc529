"""Data side of xtrans: Kaldi data directories, audio loading and resampling, validation,
audio formatting, batching by duration and the training dataset."""
