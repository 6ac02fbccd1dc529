"""Export of a trained transducer for deployment: ONNX graphs of the streaming encoder
(:mod:`xtrans.export.encoder`), of the prediction network and joiner, and the export directory's
``tokens.txt``, ``config.json`` and metadata (:mod:`xtrans.export.onnx_export`)."""
