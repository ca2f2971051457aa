"""The FID feature extractors' names (no torch import: ``ablations/report.py`` and the paper report label FIDs with
them without loading any model). ``evaluation.features`` builds the extractors."""

INCEPTION_NAME = "inception-v3-compat"
DIGITS_CLASSIFIER_NAME = "digits-classifier-v1"
EXTRACTOR_NAMES = (INCEPTION_NAME, DIGITS_CLASSIFIER_NAME)
