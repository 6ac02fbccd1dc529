"""Export of a trained transducer for deployment: ONNX graphs of the streaming encoder
(:mod:`xtrans.export.encoder`), of the prediction network and joiner, and the export directory's
``tokens.txt``, ``config.json`` and metadata (:mod:`xtrans.export.onnx_export`), all traced by
:func:`xtrans.export.trace.trace`; :func:`xtrans.export.directory.export` writes a whole export
directory from a checkpoint (and :func:`~xtrans.export.directory.quantize_int8` its int8 encoder)."""
