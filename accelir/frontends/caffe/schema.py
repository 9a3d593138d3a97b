"""accelir's own schema of the Caffe messages and fields it reads.

Written for accelir from the field numbers of Caffe's ``caffe.proto`` (BVLC Caffe, and
the SSD fork for Normalize, Permute, PriorBox and DetectionOutput).  Only the fields
the Caffe frontend reads are listed: the wire reader skips other field numbers and the
text parser skips other field names, so files written by any Caffe still load.

A field is ``(number, name, kind, repeated, default)``; ``kind`` is a scalar kind
(``int``, ``uint``, ``bool``, ``float``, ``double``, ``string``, ``bytes``), an enum
(``enum:Name``) or a message (``msg:Name``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Field", "MESSAGES", "ENUMS", "V1_LAYER_TYPES", "field_by_number"]


@dataclass(frozen=True)
class Field:
    number: int
    name: str
    kind: str
    repeated: bool = False
    default: Any = None

    @property
    def message(self) -> str | None:
        return self.kind[4:] if self.kind.startswith("msg:") else None

    @property
    def enum(self) -> str | None:
        return self.kind[5:] if self.kind.startswith("enum:") else None


def _f(number: int, name: str, kind: str, default: Any = None) -> Field:
    return Field(number, name, kind, False, default)


def _r(number: int, name: str, kind: str) -> Field:
    return Field(number, name, kind, True, None)


ENUMS: dict[str, dict[str, int]] = {
    "Phase": {"TRAIN": 0, "TEST": 1},
    "PoolMethod": {"MAX": 0, "AVE": 1, "STOCHASTIC": 2},
    "EltwiseOp": {"PROD": 0, "SUM": 1, "MAX": 2},
    "NormRegion": {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1},
    "CodeType": {"CORNER": 1, "CENTER_SIZE": 2, "CORNER_SIZE": 3},
    "ReductionOp": {"SUM": 1, "ASUM": 2, "SUMSQ": 3, "MEAN": 4},
    "Engine": {"DEFAULT": 0, "CAFFE": 1, "CUDNN": 2},
    "V1LayerType": {
        "NONE": 0, "ABSVAL": 35, "ACCURACY": 1, "ARGMAX": 30, "BNLL": 2, "CONCAT": 3, "CONTRASTIVE_LOSS": 37,
        "CONVOLUTION": 4, "DATA": 5, "DECONVOLUTION": 39, "DROPOUT": 6, "DUMMY_DATA": 32, "EUCLIDEAN_LOSS": 7,
        "ELTWISE": 25, "EXP": 38, "FLATTEN": 8, "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "HINGE_LOSS": 28, "IM2COL": 11,
        "IMAGE_DATA": 12, "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15, "MEMORY_DATA": 29,
        "MULTINOMIAL_LOGISTIC_LOSS": 16, "MVN": 34, "POOLING": 17, "POWER": 26, "RELU": 18, "SIGMOID": 19,
        "SIGMOID_CROSS_ENTROPY_LOSS": 27, "SILENCE": 36, "SOFTMAX": 20, "SOFTMAX_LOSS": 21, "SPLIT": 22,
        "SLICE": 33, "TANH": 23, "WINDOW_DATA": 24, "THRESHOLD": 31},
}

#: V1 layer type enum -> the V2 type string the layer rules know
V1_LAYER_TYPES: dict[str, str] = {
    "ABSVAL": "AbsVal", "ARGMAX": "ArgMax", "BNLL": "BNLL", "CONCAT": "Concat", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout", "ELTWISE": "Eltwise", "EXP": "Exp",
    "FLATTEN": "Flatten", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN", "POOLING": "Pooling", "POWER": "Power",
    "RELU": "ReLU", "SIGMOID": "Sigmoid", "SOFTMAX": "Softmax", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "MVN": "MVN", "THRESHOLD": "Threshold", "SILENCE": "Silence",
    "DATA": "Data", "IMAGE_DATA": "ImageData", "MEMORY_DATA": "MemoryData", "HDF5_DATA": "HDF5Data",
    "DUMMY_DATA": "DummyData", "ACCURACY": "Accuracy", "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
}

_CONV = [_f(1, "num_output", "uint"), _f(2, "bias_term", "bool", True), _r(3, "pad", "uint"),
         _r(4, "kernel_size", "uint"), _f(5, "group", "uint", 1), _r(6, "stride", "uint"),
         _f(9, "pad_h", "uint", 0), _f(10, "pad_w", "uint", 0), _f(11, "kernel_h", "uint"),
         _f(12, "kernel_w", "uint"), _f(13, "stride_h", "uint"), _f(14, "stride_w", "uint"),
         _f(16, "axis", "int", 1), _r(18, "dilation", "uint")]

# the layer-specific parameter messages, by their field in LayerParameter (V2) and V1LayerParameter
_PARAMS: list[tuple[str, int, int | None, list[Field]]] = [
    ("argmax_param", 103, 23, [_f(1, "out_max_val", "bool", False), _f(2, "top_k", "uint", 1),
                               _f(3, "axis", "int")]),
    ("batch_norm_param", 139, None, [_f(1, "use_global_stats", "bool"),
                                     _f(2, "moving_average_fraction", "float", .999), _f(3, "eps", "float", 1e-5)]),
    ("bias_param", 141, None, [_f(1, "axis", "int", 1), _f(2, "num_axes", "int", 1)]),
    ("concat_param", 104, 9, [_f(1, "concat_dim", "uint", 1), _f(2, "axis", "int", 1)]),
    ("convolution_param", 106, 10, _CONV),
    ("crop_param", 144, None, [_f(1, "axis", "int", 2), _r(2, "offset", "uint")]),
    ("detection_output_param", 204, None, [
        _f(1, "num_classes", "uint"), _f(2, "share_location", "bool", True), _f(3, "background_label_id", "int", 0),
        _f(4, "nms_param", "msg:NonMaximumSuppressionParameter"), _f(6, "code_type", "enum:CodeType", "CORNER"),
        _f(7, "keep_top_k", "int", -1), _f(8, "variance_encoded_in_target", "bool", False),
        _f(9, "confidence_threshold", "float")]),
    ("dropout_param", 108, 12, [_f(1, "dropout_ratio", "float", 0.5)]),
    ("eltwise_param", 110, 24, [_f(1, "operation", "enum:EltwiseOp", "SUM"), _r(2, "coeff", "float")]),
    ("elu_param", 140, None, [_f(1, "alpha", "float", 1.0)]),
    ("exp_param", 111, 41, [_f(1, "base", "float", -1.0), _f(2, "scale", "float", 1.0),
                            _f(3, "shift", "float", 0.0)]),
    ("flatten_param", 135, None, [_f(1, "axis", "int", 1), _f(2, "end_axis", "int", -1)]),
    ("inner_product_param", 117, 17, [_f(1, "num_output", "uint"), _f(2, "bias_term", "bool", True),
                                      _f(5, "axis", "int", 1), _f(6, "transpose", "bool", False)]),
    ("input_param", 143, None, [_r(1, "shape", "msg:BlobShape")]),
    # DeepLab's and PSPNet's forks number interp_param 143, which BVLC gave input_param: it is read from
    # the prototxt only (number 0: never taken from the wire; a caffemodel's copy of a layer's params is unused)
    ("interp_param", 0, None, [_f(1, "height", "int", 0), _f(2, "width", "int", 0), _f(3, "zoom_factor", "int", 1),
                               _f(4, "shrink_factor", "int", 1), _f(5, "pad_beg", "int", 0),
                               _f(6, "pad_end", "int", 0)]),
    ("log_param", 134, None, [_f(1, "base", "float", -1.0), _f(2, "scale", "float", 1.0),
                              _f(3, "shift", "float", 0.0)]),
    ("lrn_param", 118, 18, [_f(1, "local_size", "uint", 5), _f(2, "alpha", "float", 1.0), _f(3, "beta", "float", 0.75),
                            _f(4, "norm_region", "enum:NormRegion", "ACROSS_CHANNELS"), _f(5, "k", "float", 1.0)]),
    ("norm_param", 206, None, [_f(1, "across_spatial", "bool", True), _f(3, "channel_shared", "bool", True),
                               _f(4, "eps", "float", 1e-10)]),
    ("permute_param", 202, None, [_r(1, "order", "uint")]),
    ("pooling_param", 121, 19, [_f(1, "pool", "enum:PoolMethod", "MAX"), _r(2, "kernel_size", "uint"),
                                _r(3, "stride", "uint"), _r(4, "pad", "uint"), _f(5, "kernel_h", "uint"),
                                _f(6, "kernel_w", "uint"), _f(7, "stride_h", "uint"), _f(8, "stride_w", "uint"),
                                _f(9, "pad_h", "uint", 0), _f(10, "pad_w", "uint", 0),
                                _f(12, "global_pooling", "bool", False)]),
    ("power_param", 122, 21, [_f(1, "power", "float", 1.0), _f(2, "scale", "float", 1.0),
                              _f(3, "shift", "float", 0.0)]),
    ("prelu_param", 131, None, [_f(2, "channel_shared", "bool", False)]),
    ("prior_box_param", 203, None, [
        _r(1, "min_size", "float"), _r(2, "max_size", "float"), _r(3, "aspect_ratio", "float"),
        _f(4, "flip", "bool", True), _f(5, "clip", "bool", False), _r(6, "variance", "float"),
        _f(7, "img_size", "uint"), _f(8, "img_h", "uint"), _f(9, "img_w", "uint"), _f(10, "step", "float"),
        _f(11, "step_h", "float"), _f(12, "step_w", "float"), _f(13, "offset", "float", 0.5)]),
    ("relu_param", 123, 30, [_f(1, "negative_slope", "float", 0.0)]),
    ("reshape_param", 133, None, [_f(1, "shape", "msg:BlobShape"), _f(2, "axis", "int", 0),
                                  _f(3, "num_axes", "int", -1)]),
    ("scale_param", 142, None, [_f(1, "axis", "int", 1), _f(2, "num_axes", "int", 1),
                                _f(4, "bias_term", "bool", False)]),
    ("slice_param", 126, 31, [_f(1, "slice_dim", "uint", 1), _r(2, "slice_point", "uint"), _f(3, "axis", "int", 1)]),
    ("softmax_param", 125, 39, [_f(2, "axis", "int", 1)]),
    # forks' layers, read from the prototxt only (number 0: forks disagree on their numbers, and a
    # caffemodel's copy of a layer's params is unused): the YOLOv3 ports' nearest Upsample, ShuffleNet's
    # ShuffleChannel
    ("upsample_param", 0, None, [_f(1, "scale", "uint", 1)]),
    ("shuffle_channel_param", 0, None, [_f(1, "group", "uint", 1)]),
    ("threshold_param", 128, 25, [_f(1, "threshold", "float", 0.0)]),
    ("swish_param", 147, None, [_f(1, "beta", "float", 1.0)]),
    ("clip_param", 148, None, [_f(1, "min", "float"), _f(2, "max", "float")]),
    ("mvn_param", 120, 34, [_f(1, "normalize_variance", "bool", True), _f(2, "across_channels", "bool", False),
                            _f(3, "eps", "float", 1e-9)]),
    ("tile_param", 138, None, [_f(1, "axis", "int", 1), _f(2, "tiles", "int")]),
    ("reduction_param", 136, None, [_f(1, "operation", "enum:ReductionOp", "SUM"), _f(2, "axis", "int", 0),
                                    _f(3, "coeff", "float", 1.0)]),
]


def _build() -> dict[str, dict[str, Field]]:
    msgs: dict[str, list[Field]] = {
        "BlobShape": [_r(1, "dim", "int")],
        "BlobProto": [_f(1, "num", "int", 0), _f(2, "channels", "int", 0), _f(3, "height", "int", 0),
                      _f(4, "width", "int", 0), _r(5, "data", "float"), _f(7, "shape", "msg:BlobShape"),
                      _r(8, "double_data", "double")],
        "NetStateRule": [_f(1, "phase", "enum:Phase")],
        "NonMaximumSuppressionParameter": [_f(1, "nms_threshold", "float", 0.3), _f(2, "top_k", "int"),
                                           _f(3, "eta", "float", 1.0)],
        "NetParameter": [_f(1, "name", "string"), _r(2, "layers", "msg:V1LayerParameter"), _r(3, "input", "string"),
                         _r(4, "input_dim", "int"), _r(8, "input_shape", "msg:BlobShape"),
                         _r(100, "layer", "msg:LayerParameter")],
        "LayerParameter": [_f(1, "name", "string"), _f(2, "type", "string"), _r(3, "bottom", "string"),
                           _r(4, "top", "string"), _f(10, "phase", "enum:Phase"), _r(7, "blobs", "msg:BlobProto"),
                           _r(8, "include", "msg:NetStateRule"), _r(9, "exclude", "msg:NetStateRule")],
        "V1LayerParameter": [_r(2, "bottom", "string"), _r(3, "top", "string"), _f(4, "name", "string"),
                             _f(5, "type", "enum:V1LayerType"), _r(6, "blobs", "msg:BlobProto"),
                             _r(32, "include", "msg:NetStateRule"), _r(33, "exclude", "msg:NetStateRule")],
    }
    for field, v2, v1, fields in _PARAMS:
        name = "".join(p.capitalize() for p in field.split("_")[:-1]) + "Parameter"
        msgs[name] = fields
        msgs["LayerParameter"].append(_f(v2, field, f"msg:{name}"))
        if v1 is not None:
            msgs["V1LayerParameter"].append(_f(v1, field, f"msg:{name}"))
    return {m: {f.name: f for f in fs} for m, fs in msgs.items()}


MESSAGES: dict[str, dict[str, Field]] = _build()
_BY_NUMBER: dict[str, dict[int, Field]] = {m: {f.number: f for f in fs.values() if f.number}
                                           for m, fs in MESSAGES.items()}


def field_by_number(message: str, number: int) -> Field | None:
    """The field the wire format numbers ``number`` in ``message``; None for a field the schema lacks."""
    return _BY_NUMBER[message].get(number)
