"""The FID feature extractors' names (no torch import: ``ablations/report.py`` and the paper report label FIDs with
them without loading any model). ``evaluation.features`` builds the extractors."""

INCEPTION_NAME = "inception-v3-compat"
DIGITS_CLASSIFIER_NAME = "digits-classifier-v1"
EXTRACTOR_NAMES = (INCEPTION_NAME, DIGITS_CLASSIFIER_NAME)


def default_feature_extractor(dataset_name: str) -> str:
    """digits -> the digits classifier (Inception is meaningless on 16x16 greyscale); else Inception."""
    return DIGITS_CLASSIFIER_NAME if dataset_name == "digits" else INCEPTION_NAME


#: the weights (state-dict sha256) an extractor's FIDs must come from, where the project ships them: a row in another
#: feature space is stale (never compared or pooled; the report lists it with the command that regenerates it).
#: ``evaluation.features`` checks the shipped file against this at load.
PINNED_WEIGHTS_SHA256 = {DIGITS_CLASSIFIER_NAME: "9371b7aeccca287bee17f58963fb1a0749ffc420850544189f9b06730402117c"}


def is_stale(extractor, weights_sha256) -> bool:
    """Is a FID with this extractor and weights hash outside the pinned feature space? (False for extractors
    without a pin, e.g. Inception, whose file the user provides.)"""
    pin = PINNED_WEIGHTS_SHA256.get(extractor) if isinstance(extractor, str) else None
    return pin is not None and weights_sha256 != pin
