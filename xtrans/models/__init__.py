"""Model components: the wav2vec 2.0 / XLSR encoder, prediction networks, joiner, transducer."""
