# Rules of the segment stage.


def segment_targets():
    """Files of this stage that 'rule all' asks for."""
    return []
