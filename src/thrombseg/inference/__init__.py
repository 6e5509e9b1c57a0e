"""Inference: post-processing of predicted probability maps, and prediction of a new patient."""

from thrombseg.inference.patient import predict_patient
from thrombseg.inference.postprocess import postprocess_thrombus

__all__ = ["postprocess_thrombus", "predict_patient"]
