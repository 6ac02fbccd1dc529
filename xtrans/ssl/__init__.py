"""Self-supervised pretraining of an encoder, HuBERT-style (Hsu et al., 2021).

::

    unlabelled audio --(xtrans.ssl.targets: log-mel frames, or a layer of an iteration-1 model)-->
        k-means codebook (xtrans.ssl.kmeans) --> one cluster per encoder frame
    waveform --> encoder with time spans masked by its mask_emb --> final_proj, cosine logits over
        the clusters' embeddings / tau --> cross-entropy on the masked frames  (xtrans.ssl.model)
    xtrans.ssl.trainer: batches, updates, checkpoints that resume exactly, steps.jsonl
    xtrans.ssl.export: the encoder as a Hugging Face directory that load_pretrained reads back

The command line is ``python -m xtrans.bin.pretrain_ssl``.
"""

from xtrans.ssl.config import PretrainConfig
from xtrans.ssl.export import NotExportableError, save_hf_encoder
from xtrans.ssl.kmeans import KMeansResult, kmeans, kmeans_plusplus, lloyd
from xtrans.ssl.model import MaskedPredictionModel, MaskedPredictionOutput
from xtrans.ssl.targets import FeatureSpec, FrameTargets, fit_frame_targets

__all__ = ["FeatureSpec", "FrameTargets", "KMeansResult", "MaskedPredictionModel", "MaskedPredictionOutput",
           "NotExportableError", "PretrainConfig", "fit_frame_targets", "kmeans", "kmeans_plusplus", "lloyd",
           "save_hf_encoder"]
