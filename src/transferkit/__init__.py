"""transferkit: reuse large pretrained models on new tasks — feature extraction, fine-tuning, domain adaptation.

    from transferkit import FeatureExtractor, load_backbone
"""

from transferkit.backbones import Backbone, load_backbone
from transferkit.errors import TransferkitError

__version__ = "0.1.0"
__all__ = ["Backbone", "FeatureExtractor", "FineTunedClassifier", "TransferkitError", "__version__", "load_backbone"]


def __getattr__(name: str):
    # scikit-learn is imported only when the estimator is asked for
    if name in ("FeatureExtractor", "FineTunedClassifier"):
        from transferkit import sklearn

        return getattr(sklearn, name)
    raise AttributeError(f"module 'transferkit' has no attribute {name!r}")
