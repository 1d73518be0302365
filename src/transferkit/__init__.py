"""transferkit: reuse large pretrained models on new tasks — feature extraction, fine-tuning, domain adaptation.

    import transferkit
    model = transferkit.load("out/best")          # any model folder: a scikit-learn estimator on raw items
    model.predict(["a new review"]), model.predict_proba(...), model.embed(...)
    from transferkit import FeatureExtractor, load_backbone
"""

from transferkit.errors import TransferkitError

__version__ = "0.1.0"
__all__ = ["Backbone", "FeatureExtractor", "FineTunedClassifier", "Model", "TransferkitError", "__version__", "load",
           "load_backbone"]


def __getattr__(name: str):
    # torch and scikit-learn are imported only when asked for, so `transferkit --help` starts in a blink
    if name in ("Backbone", "load_backbone"):
        from transferkit import backbones

        return getattr(backbones, name)
    if name in ("FeatureExtractor", "FineTunedClassifier", "Model", "load"):
        from transferkit import sklearn

        return getattr(sklearn, name)
    raise AttributeError(f"module 'transferkit' has no attribute {name!r}")
