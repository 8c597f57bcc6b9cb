"""Looking inside a trained model: the regulator's states and gates, attributions, split-level analyses."""
from .analyses import (
    analyze_split, block_output_modules, cache_file, cache_key, cached, capture_block_outputs, file_identity,
    regulator_ablated,
)
from .attribution import (
    BASELINE_LABELS, BASELINES, METHOD_LABELS, METHODS, Attribution, MethodSettings, attribute, attribute_many,
    attribution_layers, make_baseline,
)
from .images import ImageInputError, prepare_image
from .predictions import top_k
from .quality import attribution_quality, importances, mass_on_object, pointing_hit, randomization_check, spearman
from .states import channel_maps, gate_profile, has_regulator, record_states, state_grid

__all__ = [
    "analyze_split", "block_output_modules", "cache_file", "cache_key", "cached", "capture_block_outputs",
    "file_identity", "regulator_ablated", "BASELINE_LABELS", "BASELINES", "METHOD_LABELS", "METHODS", "Attribution",
    "MethodSettings",
    "attribute", "attribute_many", "make_baseline", "importances",
    "attribution_layers", "ImageInputError", "prepare_image", "attribution_quality", "mass_on_object",
    "pointing_hit", "randomization_check", "spearman", "channel_maps", "gate_profile", "has_regulator",
    "record_states", "state_grid", "top_k",
]
