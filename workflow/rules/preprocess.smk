# Rules of the preprocess stage.


def preprocess_targets():
    """Files of this stage that 'rule all' asks for."""
    return []
