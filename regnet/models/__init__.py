"""The paper's networks: cells, blocks, the ResNet/RegNet families and a registry."""
from .blocks import BasicBlock, Bottleneck, RegulatedBasicBlock, RegulatedBottleneck, Stage
from .folding import folded_for_inference
from .cells import ConvGRUCell, ConvLSTMCell, ConvRNNCell, StepTaps, make_cell
from .networks import MnistCNN, ResNetBackbone, TinyResNet
from .recording import RegulatorRecord, record, regulated_blocks, regulator_ablated
from .registry import ModelInfo, build_model, check_options, list_models, model_info, natural_input_size
from .summary import ModelSummary, count_params, format_options, format_table, summarize_registry, summary

__all__ = [
    "BasicBlock", "Bottleneck", "RegulatedBasicBlock", "RegulatedBottleneck", "Stage",
    "ConvRNNCell", "ConvGRUCell", "ConvLSTMCell", "StepTaps", "make_cell", "folded_for_inference",
    "MnistCNN", "ResNetBackbone", "TinyResNet",
    "RegulatorRecord", "record", "regulated_blocks", "regulator_ablated",
    "ModelInfo", "build_model", "check_options", "list_models", "model_info", "natural_input_size",
    "ModelSummary", "count_params", "format_options", "format_table", "summarize_registry", "summary",
]
