"""The backbone reference a model folder keeps: enough to build the same backbone again, and a digest that
proves it is the same (weights that changed since are refused, not silently used)."""

from __future__ import annotations

import re
from typing import Any

from transferkit.backbones.registry import build_options
from transferkit.errors import TransferkitError
from transferkit.model.info import ModelFolderError


def backbone_record(backbone: Any) -> dict:
    """The reference a model folder writes for `backbone`: spec, build options, weights digest, modality,
    feature dimension, pooling and preprocessing."""
    ident = backbone.identity()
    build = build_options(**(backbone.build or {}))
    return {"spec": ident["spec"], "build": build, "weights": ident["weights"], "modality": backbone.modality,
            "feature_dim": ident["feature_dim"], "pooling": ident["pooling"],
            "preprocessing": ident["preprocessing"]}


def _plain(obj: Any) -> Any:
    """`obj` as JSON would give it back (tuples become lists), so a recorded description compares equal."""
    import json

    return json.loads(json.dumps(obj)) if obj is not None else None


def record_from_features(meta: dict) -> dict:
    """The backbone record of a feature folder's meta.json (the backbone the features were extracted with)."""
    ident = meta["backbone"]
    build = build_options(**(meta.get("build") or build_from_identity(ident)))
    return {"spec": ident["spec"], "build": build,
            "weights": ident.get("weights"), "modality": (meta.get("data") or {}).get("modality", "image"),
            "feature_dim": ident.get("feature_dim"), "pooling": ident.get("pooling"),
            "preprocessing": ident.get("preprocessing")}


def build_from_identity(identity: dict) -> dict:
    """Build options recovered from a backbone identity alone (feature folders and runs of earlier versions,
    which did not record them): the pooling, and the input size or token limit of its preprocessing. A `run:`
    backbone is rebuilt exactly as it was trained: it takes no options."""
    if str(identity.get("spec", "")).startswith("run:"):
        return {}
    pre = identity.get("preprocessing") or {}
    pooling = identity.get("pooling") or "default"
    if "+" in pooling:  # a derived name such as st's "mean+normalize" is what "default" builds
        pooling = "default"
    build: dict = {"pretrained": bool(identity.get("pretrained", True)), "pooling": pooling}
    if pre.get("kind") == "image" and pre.get("size"):
        build["image_size"] = int(pre["size"])
    if pre.get("kind") == "text" and pre.get("max_length"):
        build["max_length"] = int(pre["max_length"])
    return build_options(**build)


def rebuild_backbone(record: dict, *, device: Any = "auto", trust_pickle: bool = False,
                     trust_remote_code: bool = False, check_digest: bool = True, where: str = "the model") -> Any:
    """The backbone a record describes, built again on `device`; refused when its weights or its preprocessing
    now differ. A failure to build it is a ModelFolderError that names the folder (and no build flag, which the
    commands that read folders do not have)."""
    spec = record.get("spec")
    if not spec:
        raise ModelFolderError(f"{where} names no backbone spec: the model folder is damaged")
    if spec.startswith("module:"):
        raise ModelFolderError(f"{where} was made on an in-process module ({spec}): it cannot be rebuilt from the "
                               "folder; load the module and use the library with it")
    build = build_options(**(record.get("build") or {}))
    bb = _build(spec, build, device, trust_pickle, trust_remote_code, where)
    want = _plain(record.get("preprocessing"))
    if want and _plain(bb.preprocessing) != want and ("image_size" in build or "max_length" in build):
        # a record recovered from an identity alone may name the native size explicitly, which some sources
        # build with another crop: the default build is then the one that preprocesses as recorded
        plain = {k: v for k, v in build.items() if k not in ("image_size", "max_length")}
        alt = _build(spec, plain, device, trust_pickle, trust_remote_code, where)
        if _plain(alt.preprocessing) == want:
            bb = alt
    if want and _plain(bb.preprocessing) != want:
        raise ModelFolderError(f"{spec} now preprocesses items as {bb.preprocessing}, not as {where} was made "
                               f"({want}): rebuild it with the recorded options or make the model again")
    recorded = record.get("weights")
    if check_digest and recorded and bb.weights_digest() != recorded:
        raise ModelFolderError(f"the weights {spec} loads now differ from those {where} was made with (digest "
                               f"{bb.weights_digest()[:12]}… ≠ {recorded[:12]}…): install the same weights version")
    return bb


def _build(spec: str, build: dict, device: Any, trust_pickle: bool, trust_remote_code: bool, where: str) -> Any:
    from transferkit.backbones import load_backbone

    try:
        return load_backbone(spec, device=device, trust_pickle=trust_pickle, trust_remote_code=trust_remote_code,
                             **build)
    except TransferkitError as e:
        if "--trust-pickle" in str(e) or "--trust-remote-code" in str(e):
            raise  # the fix is a flag the reading commands have too
        first = re.split(r" — |; |: (?=[^:]*--)", str(e))[0]
        raise ModelFolderError(f"{where} needs the backbone {spec}, which cannot be built here: {first}") from e
