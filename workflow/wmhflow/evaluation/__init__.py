"""The evaluation stage: the WMH challenge's metrics, per-subject scoring and lesion tables."""
