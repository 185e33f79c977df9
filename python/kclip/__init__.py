"""kclip: CLIP trained with knowledge distilled from a Llama teacher (Knowledge-CLIP), on LibTorch.

The heavy lifting lives in the C++ extension ``kclip._C``; this package re-exports it under the same names as
the C++ API. Importing kclip sets LibTorch's intra-op threads to the available cores (unless KCLIP_NUM_THREADS or
OMP_NUM_THREADS says otherwise) and warns if LibTorch is not using OpenBLAS.
"""
import torch  # noqa: F401  (loads libtorch and its pybind11 type casters before the extension)

from ._C import (  # noqa: F401
    CLIP,
    CLIPConfig,
    ClipTokenizer,
    ConceptLoss,
    ContrastiveLoss,
    EmbeddingCache,
    Error,
    ImageTransform,
    KMeans,
    KnowledgeClipLoss,
    Llama,
    LlamaTeacher,
    LlamaTokenizer,
    PrecomputedTeacher,
    SafetensorsFile,
    __version__,
    adjusted_rand_index,
    available_cpus,
    blas_is_openblas,
    blas_library,
    blas_threading,
    decode_image,
    default_num_threads,
    init,
    load_safetensors,
    load_safetensors_metadata,
    nmi,
    OPENAI_DATASET_MEAN,
    OPENAI_DATASET_STD,
    num_threads,
    purity,
    read_captions,
    read_image,
    resize_bicubic,
    runtime_summary,
    save_safetensors,
    set_num_threads,
    soft_cross_entropy,
    Teacher,
    TextDistillationLoss,
)

init()


def preprocess(images, size=224):
    """OpenAI CLIP's preprocessing: a path or a uint8 image tensor [3, H, W] -> float [3, size, size]; a list of
    paths or tensors, or a uint8 batch [N, 3, H, W] -> [N, 3, size, size] (decoded and resized in parallel)."""
    return ImageTransform(size)(images)


__all__ = [
    "CLIP",
    "CLIPConfig",
    "ClipTokenizer",
    "ConceptLoss",
    "ContrastiveLoss",
    "EmbeddingCache",
    "Error",
    "ImageTransform",
    "KMeans",
    "KnowledgeClipLoss",
    "Llama",
    "LlamaTeacher",
    "LlamaTokenizer",
    "PrecomputedTeacher",
    "SafetensorsFile",
    "__version__",
    "adjusted_rand_index",
    "available_cpus",
    "blas_is_openblas",
    "blas_library",
    "blas_threading",
    "decode_image",
    "default_num_threads",
    "init",
    "load_safetensors",
    "load_safetensors_metadata",
    "nmi",
    "OPENAI_DATASET_MEAN",
    "OPENAI_DATASET_STD",
    "preprocess",
    "num_threads",
    "purity",
    "read_captions",
    "read_image",
    "resize_bicubic",
    "runtime_summary",
    "save_safetensors",
    "set_num_threads",
    "soft_cross_entropy",
    "Teacher",
    "TextDistillationLoss",
]
