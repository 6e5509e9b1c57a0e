"""Inference: post-processing of predicted probability maps."""

from thrombseg.inference.postprocess import postprocess_thrombus

__all__ = ["postprocess_thrombus"]
