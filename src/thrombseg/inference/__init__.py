"""Inference: post-processing of predicted probability maps, and prediction of a new patient."""

__all__ = ["postprocess_thrombus", "predict_patient"]


def __getattr__(name):  # lazy: importing a light submodule (tune, postprocess) must not load torch
    if name == "predict_patient":
        from .patient import predict_patient

        return predict_patient
    if name == "postprocess_thrombus":
        from .postprocess import postprocess_thrombus

        return postprocess_thrombus
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
