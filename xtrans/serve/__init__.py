"""The live streaming server: websocket protocol, batched decoding across connections, endpointing.

``python -m xtrans.bin.serve --model exp/stage5/best.pt`` serves ``ws://127.0.0.1:6006/ws``
(protocol: :mod:`xtrans.serve.protocol`) and a microphone page at ``http://127.0.0.1:6006/``.
:mod:`xtrans.serve.engine` is the decoding loop without the network, :mod:`xtrans.serve.backend`
the recognizers it batches, :mod:`xtrans.serve.server` the asyncio server and
:mod:`xtrans.serve.client` a Python client.
"""
